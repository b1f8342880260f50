"""The ``labels:`` block: which columns of the labels CSV hold what, and the unit of the times."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

DAYS_PER_MONTH = 365.25 / 12
"""30.4375: months are converted to days with the mean Gregorian month."""
TIME_UNITS = {"days": 1.0, "months": DAYS_PER_MONTH}


@dataclass(frozen=True, kw_only=True)
class LabelsConfig:
    """Column names of the labels CSV (one row per slide) and the unit of its times."""

    patient: str = "patient_id"
    """Column of the patient id (TCGA-CDR: bcr_patient_barcode)."""
    slide: str | None = None
    """Column of the slide id (null = slide_id, else pathology_id)."""
    time: str = "t"
    """Column of the follow-up time (TCGA-CDR: DSS.time, OS.time ...)."""
    event: str = "e"
    """Column of the event indicator, 1 = event, 0 = censored (TCGA-CDR: DSS, OS ...)."""
    project: str = "project"
    """Column of the slide's TCGA project (TCGA-KIRC ...), used by the {project} path field."""
    time_unit: str = "days"
    """Unit of the time column: days or months (months are converted to days, x 30.4375)."""

    def __post_init__(self) -> None:
        if self.time_unit not in TIME_UNITS:
            raise ConfigError(
                f"labels.time_unit: {self.time_unit!r} is not a supported unit",
                hint="use days or months (months are converted to days, x 30.4375)",
            )
        for name in ("patient", "time", "event", "project"):
            if not getattr(self, name).strip():
                raise ConfigError(f"labels.{name}: empty column name")

    @property
    def days_per_unit(self) -> float:
        return TIME_UNITS[self.time_unit]
