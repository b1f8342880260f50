"""What STEPH learned per source cancer: mean merge weight w, mean mixup lambda, selection frequency."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layout import ProjectLayout
from .inputs import read_coefficients


@dataclass(frozen=True)
class SourceCoefficients:
    """Per source cancer (columns), averaged over every test patient of every fold."""

    method: str
    sources: list[str]
    mean_w: list[float]
    mean_lambda: list[float]
    selected: list[float]
    """Fraction of (patient, fold) rows in which the source was among the selected top-k."""
    folds: list[int]
    patients: int


def coefficient_folds(layout: ProjectLayout, target: str, method: str, folds: list[int]) -> list[int]:
    """Folds of ``method`` that have a ``merged/<T>/<method>/fold_k/coefficients.csv``."""
    return [k for k in folds if layout.merged_coefficients(target, method, k).is_file()]


def source_coefficients(
    layout: ProjectLayout, target: str, method: str, folds: list[int]
) -> SourceCoefficients | None:
    """Average the coefficients.csv of ``folds``; None when no fold has one (not a STEPH method).

    Raises:
        DataError: a coefficients file lacks a column or has a non-numeric value.
    """
    have = coefficient_folds(layout, target, method, folds)
    if not have:
        return None
    values: dict[str, list[tuple[float, float, float]]] = {}
    patients = 0
    for fold in have:
        rows = read_coefficients(layout.merged_coefficients(target, method, fold))
        patients += len({row["patient_id"] for row in rows})
        for row in rows:
            values.setdefault(row["source"], []).append(
                (float(row["w"]), float(row["lambda"]), float(row["selected"]))
            )
    sources = sorted(values)
    means = [np.mean(np.array(values[s]), axis=0) for s in sources]
    return SourceCoefficients(
        method=method,
        sources=sources,
        mean_w=[float(m[0]) for m in means],
        mean_lambda=[float(m[1]) for m in means],
        selected=[float(m[2]) for m in means],
        folds=have,
        patients=patients,
    )
