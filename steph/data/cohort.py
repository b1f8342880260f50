"""A cancer cohort: survival labels per patient, cross-validation splits, and their validation.

Labels (``layout.labels(cancer)``) have one row per slide with columns ``patient_id``,
``slide_id`` (or ``pathology_id``, the reference's name), ``t`` (days) and ``e`` (1 = event),
and optionally ``project`` (the slide's TCGA project, for the ``{project}`` path field); other
columns are ignored. The ``labels:`` block of stephctl.yaml renames these columns (TCGA-CDR's
``DSS.time``/``DSS`` ...) and sets the time unit (months are converted to days). A patient's slides are concatenated into one bag; its ``t`` and ``e``
come from its first row (as the reference) and every other row of that patient must repeat them
exactly: a mismatch is a :class:`~steph.errors.DataError`, because the patient-level label would
otherwise depend on row order.

Splits (``layout.split(cancer, k)``) follow the UNI2-h-DSS format: one column per set, one
patient id per cell; cells that are empty or ``NA``, ``NaN``, ``None`` (any case) are ignored, and
so is a column without a name (pandas' index column). A column is a training column if its name contains
``train``, a test column if it contains ``test`` and a validation column if it contains ``val``
(case-insensitive); without a test column the validation column is the test set (as the
reference).

Patient ids follow the same rule as slide ids (:func:`~steph.layout.check_safe_id`: letters,
digits, ``.``, ``_`` and ``-``, not starting with ``.``): they name folders (``explain``) and
land in CSV files. A patient whose id breaks it (``=HYPERLINK(...)``, ``../x``) is left out with
a warning and listed in :attr:`Cohort.refused`; splits skip it. The other patients are used.

Row numbers in messages are spreadsheet rows: the header is row 1.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError, LayoutError, MissingArtifactError
from ..layout import ProjectLayout, check_safe_id
from .bags import BagStore, check_features, open_bags

if TYPE_CHECKING:
    from ..config import ModelConfig, ProjectConfig
    from ..survival import SurvivalTargets

__all__ = [
    "BagStore",
    "Cohort",
    "Patient",
    "Split",
    "check_features",
    "load_cohort",
    "load_split",
    "open_bags",
]

log = logging.getLogger(__name__)

SLIDE_COLUMNS = ("slide_id", "pathology_id")


@dataclass(frozen=True)
class Patient:
    """One patient: its slides (label-file order) and survival label."""

    patient_id: str
    slide_ids: tuple[str, ...]
    t: float
    """Observed time in days."""
    e: int
    """1 = event observed, 0 = censored."""
    projects: tuple[str, ...] = ()
    """TCGA project of each slide (same order as ``slide_ids``); empty without a project column."""


@dataclass(frozen=True)
class Split:
    """Patient ids of one cross-validation fold, in file order."""

    fold: int
    train: tuple[str, ...]
    test: tuple[str, ...]
    val: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cohort:
    """The labelled patients of one cancer, in order of first appearance in the labels file."""

    cancer: str
    patients: dict[str, Patient]
    labels_path: Path | None = None
    has_project: bool = False
    """Whether the labels have a project column (needed by a ``{project}`` features template)."""
    refused: dict[str, str] = field(default_factory=dict)
    """Patient ids of the labels left out because they break the id rule
    (:func:`~steph.layout.check_safe_id`), with the reason; splits skip them."""

    def targets(self, ids: Sequence[str], model_config: ModelConfig) -> SurvivalTargets:
        """Times, events and time bins of ``ids`` (in that order) for training or evaluation."""
        import torch

        from ..survival import SurvivalTargets, time_to_bin

        unknown = [pid for pid in ids if pid not in self.patients]
        if unknown:
            raise DataError(f"{self.cancer}: patients not in the labels: {', '.join(unknown[:10])}")
        times = torch.tensor([self.patients[pid].t for pid in ids], dtype=torch.float64)
        events = torch.tensor([self.patients[pid].e for pid in ids], dtype=torch.long)
        bins = time_to_bin(times, bin_width=model_config.bin_width_days, num_bins=model_config.time_bins)
        return SurvivalTargets(ids=list(ids), times=times, events=events, bins=bins)


def _read_rows(path: Path, what: str, hint: str) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise MissingArtifactError(f"{what} not found: {path}", hint=hint)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [[cell.strip() for cell in row] for row in csv.reader(fh)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{what} {path} cannot be read: {exc}", hint=hint) from exc
    if not rows:
        raise DataError(f"{what} {path} is empty", hint=hint)
    return rows[0], rows[1:]


EMPTY_CELLS = frozenset({"", "na", "nan", "none"})
"""Split cells read as empty (pandas writes NaN padding as an empty cell, R as NA)."""


def is_empty_cell(cell: str) -> bool:
    return cell.strip().lower() in EMPTY_CELLS


def _parse_time(cell: str, where: str, name: str = "t", unit: str = "days") -> float:
    hint = f"{name} is the follow-up time in {unit} (labels.time, labels.time_unit in stephctl.yaml)"
    if cell == "":
        raise DataError(f"{where}: {name} is missing", hint=hint)
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{where}: {name} = {cell!r} is not a number", hint=hint) from None
    if not math.isfinite(value) or value < 0:
        raise DataError(f"{where}: {name} = {cell!r} must be a finite number >= 0", hint=hint)
    return value


def _parse_event(cell: str, where: str, name: str = "e") -> int:
    try:
        value = float(cell)
    except ValueError:
        value = float("nan")
    if value not in (0.0, 1.0):
        raise DataError(
            f"{where}: {name} = {cell!r} must be 0 or 1",
            hint=f"{name} is 1 when the event was observed, 0 if censored (labels.event in stephctl.yaml)",
        )
    return int(value)


def _label_columns(path: Path, names: list[str], config: ProjectConfig) -> dict[str, int]:
    """Column index of patient, slide, time, event (and project, when present)."""
    mapping = config.labels
    wanted = {"patient": mapping.patient, "time": mapping.time, "event": mapping.event}
    slide_col = mapping.slide or next((c for c in SLIDE_COLUMNS if c in names), "slide_id")
    wanted["slide"] = slide_col
    missing = {key: col for key, col in wanted.items() if col not in names}
    if missing:
        keys = ", ".join(f"labels.{key}" for key in missing)
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing.values())} (named by {keys}; "
            f"found: {', '.join(names) or 'none'})",
            hint="map the columns in the labels: block of stephctl.yaml (patient, slide, time, event), "
            "or write patient_id, slide_id (or pathology_id), t (days) and e (0/1), one row per slide",
        )
    columns = {key: names.index(col) for key, col in wanted.items()}
    if mapping.project in names:
        columns["project"] = names.index(mapping.project)
    return columns


def load_cohort(layout: ProjectLayout, config: ProjectConfig, cancer: str) -> Cohort:
    """Read and validate the labels of ``cancer`` (columns and time unit from ``config.labels``).

    Raises:
        MissingArtifactError: the labels file does not exist.
        DataError: a mapped column is missing, or a row has a missing, negative or
            non-numeric time, an event outside {0, 1}, an unsafe or repeated slide id, or
            disagrees with the patient's first row (names the file and row).
    """
    mapping = config.labels
    path = layout.labels(cancer)
    header, rows = _read_rows(
        path, f"{cancer} labels", hint=f"write {path} with columns patient_id,slide_id,t,e"
    )
    names = [h.strip() for h in header]
    col = _label_columns(path, names, config)
    scale = mapping.days_per_unit
    patients: dict[str, Patient] = {}
    first_row: dict[str, int] = {}
    slide_rows: dict[str, int] = {}
    refused: dict[str, str] = {}
    for offset, row in enumerate(rows):
        if not any(row):
            continue
        row_no = offset + 2
        cells = row + [""] * (len(names) - len(row))
        pid = cells[col["patient"]]
        where = f"{path}, row {row_no}" + (f" (patient {pid})" if pid else "")
        if not pid:
            raise DataError(f"{where}: {mapping.patient} is empty")
        if pid in refused:
            continue
        try:
            check_safe_id(pid, "patient_id")
        except LayoutError as exc:  # one bad patient fails alone: left out, named in the log
            refused[pid] = f"{path}, row {row_no}: {exc.message}"
            log.warning("%s; the patient is left out (hint: %s)", refused[pid], exc.hint)
            continue
        slide_id = cells[col["slide"]]
        project = cells[col["project"]] if "project" in col else ""
        try:
            check_safe_id(slide_id)
            if project:
                check_safe_id(project, "project")
        except LayoutError as exc:
            raise DataError(f"{where}: {exc.message}", hint=exc.hint) from None
        if slide_id in slide_rows:
            raise DataError(f"{where}: slide {slide_id} is already listed in row {slide_rows[slide_id]}")
        slide_rows[slide_id] = row_no
        t = _parse_time(cells[col["time"]], where, mapping.time, mapping.time_unit) * scale
        e = _parse_event(cells[col["event"]], where, mapping.event)
        known = patients.get(pid)
        if known is None:
            patients[pid] = Patient(pid, (slide_id,), t, e, (project,))
            first_row[pid] = row_no
            continue
        if (known.t, known.e) != (t, e):
            raise DataError(
                f"{where}: t={t:g}, e={e} disagree with t={known.t:g}, e={known.e} in row {first_row[pid]}",
                hint="all rows of a patient must carry the same patient-level time and event",
            )
        patients[pid] = Patient(
            pid, (*known.slide_ids, slide_id), known.t, known.e, (*known.projects, project)
        )
    if not patients:
        raise DataError(f"{path} has no data rows", hint="add one row per slide: patient_id,slide_id,t,e")
    return Cohort(
        cancer=cancer, patients=patients, labels_path=path, has_project="project" in col, refused=refused
    )


def _split_role(column: str) -> str | None:
    lowered = column.lower()
    for role in ("train", "test", "val"):
        if role in lowered:
            return role
    return None


@dataclass(frozen=True)
class SplitCell:
    """One non-empty cell of a split file."""

    patient_id: str
    role: str
    """train, test or val (a val column without a test column is the test set)."""
    row: int
    column: str


def read_split_cells(layout: ProjectLayout, cancer: str, fold: int) -> tuple[Path, list[SplitCell]]:
    """The non-empty cells of fold ``fold``'s split file, not yet checked against the labels
    (``stephctl check`` reports every problem; :func:`load_split` stops at the first).

    Raises:
        MissingArtifactError: the split file does not exist.
        DataError: no train or test/val column, or two columns of one role.
    """
    path = layout.split(cancer, fold)
    header, rows = _read_rows(
        path, f"{cancer} split", hint=f"write {path} with columns train,test (one patient_id per cell)"
    )
    roles: dict[str, int] = {}
    for index, name in enumerate(header):
        role = _split_role(name) if name.strip() else None
        if role is None:
            continue
        if role in roles:
            raise DataError(
                f"{path}: columns {header[roles[role]]!r} and {name!r} both look like the {role} set"
            )
        roles[role] = index
    if "test" not in roles and "val" in roles:
        roles["test"] = roles.pop("val")
    if "train" not in roles or "test" not in roles:
        raise DataError(
            f"{path}: need a train column and a test (or val) column, found {', '.join(header) or 'none'}",
            hint="column names must contain 'train' and 'test' (or 'val')",
        )
    cells = []
    for offset, row in enumerate(rows):
        for role, index in roles.items():
            pid = row[index] if index < len(row) else ""
            if not is_empty_cell(pid):
                cells.append(SplitCell(pid, role, offset + 2, header[index]))
    return path, cells


def load_split(layout: ProjectLayout, cohort: Cohort, fold: int) -> Split:
    """Read and validate fold ``fold`` of ``cohort``'s cancer.

    Raises:
        MissingArtifactError: the split file does not exist.
        DataError: no train or test/val column, an empty set, a patient that is not in the
            labels, or a patient listed twice (within a set or in two sets); names file and row.
    """
    path, cells = read_split_cells(layout, cohort.cancer, fold)
    sets: dict[str, list[str]] = {"train": [], "test": []}
    seen: dict[str, tuple[str, int]] = {}
    for cell in cells:
        pid = cell.patient_id
        where = f"{path}, row {cell.row}, column {cell.column!r}"
        if pid in cohort.refused:
            log.warning("%s: patient left out of fold %d (%s)", where, fold, cohort.refused[pid])
            continue
        if pid not in cohort.patients:
            raise DataError(
                f"{where}: patient {pid} is not in the labels {cohort.labels_path or ''}".rstrip(),
                hint="add the patient to the labels file or remove it from the split",
            )
        if pid in seen:
            other_role, other_row = seen[pid]
            raise DataError(
                f"{where}: patient {pid} is also in the {other_role} set (row {other_row})",
                hint="a patient may appear in one set of a fold only, once",
            )
        seen[pid] = (cell.role, cell.row)
        sets.setdefault(cell.role, []).append(pid)
    for role in ("train", "test"):
        if not sets[role]:
            raise DataError(f"{path}: the {role} set is empty")
    split = Split(
        fold=fold, train=tuple(sets["train"]), test=tuple(sets["test"]), val=tuple(sets.get("val", ()))
    )
    if not any(cohort.patients[pid].e for pid in split.test):
        log.warning("%s fold %d: no events in the test set; its C-index is undefined", cohort.cancer, fold)
    return split
