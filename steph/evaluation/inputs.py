"""Reading and validating what evaluation consumes: predictions, result metrics, labels, coefficients.

``predictions.csv`` (``steph.predictions.write_predictions``): patient_id, t (days), e (0/1),
risk (higher = riskier) and hazard_1..hazard_T. Every problem is a :class:`DataError` naming the
file, the row and the patient; patients are returned sorted by id, so all methods of a fold list
them in the same order (the bootstrap is then paired across methods).
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ..errors import ConsistencyError, DataError, MissingArtifactError
from ..layout import ProjectLayout
from ..records import MetricsRecord

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..data.cohort import Cohort

log = logging.getLogger(__name__)

REQUIRED = ("patient_id", "t", "e", "risk")
COEFFICIENT_COLUMNS = ("patient_id", "source", "w", "lambda", "selected")


@dataclass(frozen=True)
class FoldPredictions:
    """One method's test-set predictions for one fold, sorted by patient id."""

    target: str
    method: str
    fold: int
    path: Path
    ids: tuple[str, ...]
    time: NDArray[np.float64]
    event: NDArray[np.bool_]
    risk: NDArray[np.float64]
    hazards: NDArray[np.float64]
    """Per-bin hazards, shape ``[n, T]``."""
    train_median_risk: float | None = None
    """Median risk of the same model on its training patients (metrics.json), if recorded."""


@dataclass(frozen=True)
class TrainingSurvival:
    """Survival data the censoring distribution is estimated from, and where it came from."""

    time: NDArray[np.float64]
    event: NDArray[np.bool_]
    source: str
    """``train`` (the fold's training patients) or ``test`` (fallback: no labels or split)."""


def _float(cell: str, column: str, where: str, path: Path) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{path}: {where}: {column} = {cell!r} is not a number") from None
    if math.isnan(value):
        raise DataError(
            f"{path}: {where}: {column} is NaN",
            hint="the model produced NaN outputs for this patient; retrain or re-run the stage that wrote the file",
        )
    return value


def _hazard_columns(header: list[str], path: Path, time_bins: int) -> list[int]:
    found = [name for name in header if name.startswith("hazard_")]
    expected = [f"hazard_{j + 1}" for j in range(time_bins)]
    if found != expected:
        shown = f"{found[0]}..{found[-1]}" if found else "none"
        raise ConsistencyError(
            f"{path}: {len(found)} hazard columns ({shown}), but model.time_bins = {time_bins} "
            f"(expected hazard_1..hazard_{time_bins})",
            hint="evaluate with the stephctl.yaml the predictions were made with",
        )
    return [header.index(name) for name in expected]


def read_predictions(
    path: Path,
    *,
    target: str,
    method: str,
    fold: int,
    time_bins: int,
    labels: dict[str, tuple[float, int]] | None = None,
) -> FoldPredictions:
    """Read and validate one predictions.csv (and the train_median_risk of its metrics.json).

    Args:
        path: the predictions file.
        time_bins: number of hazard columns expected (``model.time_bins``).
        labels: patient id -> (t, e) of the target's labels; when given, every patient must be
            there with the same t and e.

    Raises:
        MissingArtifactError: the file does not exist.
        DataError: missing columns, no rows, a non-numeric or NaN value, e not 0/1, a hazard
            outside [0, 1], a repeated patient, or a patient unknown to (or disagreeing with)
            the labels.
        ConsistencyError: the hazard columns do not match ``time_bins``.
    """
    if not path.is_file():
        raise MissingArtifactError(
            f"predictions not found: {path}", hint="run `stephctl train-source` or `stephctl merge`"
        )
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = [[cell.strip() for cell in row] for row in csv.reader(fh)]
    header = rows[0] if rows else []
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(header[:8]) or 'none'})",
            hint="predictions need patient_id,t,e,risk,hazard_1..hazard_T (steph.predictions.write_predictions)",
        )
    hazard_idx = _hazard_columns(header, path, time_bins)
    col = {name: header.index(name) for name in REQUIRED}
    records: dict[str, tuple[float, int, float, list[float]]] = {}
    for offset, row in enumerate(rows[1:]):
        if not any(row):
            continue
        if len(row) < len(header):
            raise DataError(f"{path}: row {offset + 2} has {len(row)} cells, the header has {len(header)}")
        pid = row[col["patient_id"]]
        where = f"row {offset + 2} (patient {pid})"
        if not pid:
            raise DataError(f"{path}: row {offset + 2}: patient_id is empty")
        if pid in records:
            raise DataError(f"{path}: {where}: patient listed twice")
        t = _float(row[col["t"]], "t", where, path)
        e = _float(row[col["e"]], "e", where, path)
        if e not in (0.0, 1.0):
            raise DataError(f"{path}: {where}: e = {row[col['e']]!r} must be 0 or 1")
        risk = _float(row[col["risk"]], "risk", where, path)
        hazards = [_float(row[i], header[i], where, path) for i in hazard_idx]
        if any(not 0.0 <= h <= 1.0 for h in hazards):
            raise DataError(f"{path}: {where}: hazards must lie in [0, 1]")
        records[pid] = (t, int(e), risk, hazards)
    if not records:
        raise DataError(f"{path} has no data rows", hint="re-run the stage that wrote it")
    if labels is not None:
        _check_against_labels(path, records, labels)
    ids = tuple(sorted(records))
    return FoldPredictions(
        target=target,
        method=method,
        fold=fold,
        path=path,
        ids=ids,
        time=np.array([records[p][0] for p in ids], dtype=np.float64),
        event=np.array([records[p][1] for p in ids], dtype=bool),
        risk=np.array([records[p][2] for p in ids], dtype=np.float64),
        hazards=np.array([records[p][3] for p in ids], dtype=np.float64).reshape(len(ids), time_bins),
        train_median_risk=train_median_risk(path.with_name("metrics.json")),
    )


def _check_against_labels(
    path: Path,
    records: dict[str, tuple[float, int, float, list[float]]],
    labels: dict[str, tuple[float, int]],
) -> None:
    unknown = [pid for pid in records if pid not in labels]
    if unknown:
        raise DataError(
            f"{path}: {len(unknown)} patient(s) not in the labels: {', '.join(sorted(unknown)[:5])}",
            hint="the predictions belong to another cohort, or the labels file changed since they were written",
        )
    for pid, (t, e, _, _) in records.items():
        if (t, e) != labels[pid]:
            raise DataError(
                f"{path}: patient {pid} has t={t:g}, e={e} but the labels say t={labels[pid][0]:g}, e={labels[pid][1]}",
                hint="re-run the stage that wrote the predictions with the current labels",
            )


def train_median_risk(metrics_json: Path) -> float | None:
    """``train_median_risk`` of a results metrics.json, or None when absent or not finite."""
    if not metrics_json.is_file():
        return None
    value = MetricsRecord.read(metrics_json).train_median_risk
    return float(value) if value is not None and math.isfinite(value) else None


def target_cohort(layout: ProjectLayout, config: ProjectConfig, target: str) -> Cohort | None:
    """The labelled patients of ``target``, or None (logged) when it has no labels file."""
    from ..data.cohort import load_cohort

    try:
        return load_cohort(layout, config, target)
    except MissingArtifactError:
        log.warning(
            "%s: no labels at %s; patients are not checked against them", target, layout.labels(target)
        )
        return None


def cohort_labels(cohort: Cohort | None) -> dict[str, tuple[float, int]] | None:
    """Patient id -> (t, e), the form :func:`read_predictions` checks against."""
    return None if cohort is None else {pid: (p.t, p.e) for pid, p in cohort.patients.items()}


def training_survival(
    layout: ProjectLayout, cohort: Cohort | None, fold: int, test: FoldPredictions
) -> TrainingSurvival:
    """The fold's training patients (labels + split), or the test set itself when unavailable.

    The censoring distribution of the IPCW metrics should come from the training set; without
    labels or a split file the test set is used instead and a warning is logged.

    Raises:
        DataError: the split file exists but is malformed.
    """
    from ..data.cohort import load_split

    if cohort is not None and layout.split(cohort.cancer, fold).is_file():
        split = load_split(layout, cohort, fold)
        time = np.array([cohort.patients[p].t for p in split.train], dtype=np.float64)
        event = np.array([cohort.patients[p].e for p in split.train], dtype=bool)
        return TrainingSurvival(time, event, "train")
    log.warning(
        "%s fold %d: no %s; the censoring distribution of Uno's C, AUC and IBS is estimated on the test set",
        test.target,
        fold,
        "labels" if cohort is None else f"split file {layout.split(cohort.cancer, fold)}",
    )
    return TrainingSurvival(test.time, test.event, "test")


def check_test_patients(
    layout: ProjectLayout, cohort: Cohort | None, fold: int, preds: FoldPredictions
) -> None:
    """The predictions cover exactly the fold's test patients (when the split file exists).

    Raises:
        DataError: test patients without a prediction, or predictions for patients outside the
            test split (names up to five of them).
    """
    from ..data.cohort import load_split

    if cohort is None or not layout.split(cohort.cancer, fold).is_file():
        return
    test = set(load_split(layout, cohort, fold).test)
    missing, extra = sorted(test - set(preds.ids)), sorted(set(preds.ids) - test)
    hint = (
        "the file is incomplete or belongs to another split; rerun the stage that wrote it with --overwrite"
    )
    if missing:
        raise DataError(
            f"{preds.path}: {len(missing)} of {len(test)} test patients of fold {fold} have no prediction: "
            f"{', '.join(missing[:5])}",
            hint=hint,
        )
    if extra:
        raise DataError(
            f"{preds.path}: {len(extra)} patient(s) not in the test split of fold {fold}: {', '.join(extra[:5])}",
            hint=hint,
        )


def read_coefficients(path: Path) -> list[dict[str, str]]:
    """Rows of a STEPH ``coefficients.csv`` (patient_id, source, w, lambda, selected), validated."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in COEFFICIENT_COLUMNS if c not in header]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}",
                hint="expected " + ",".join(COEFFICIENT_COLUMNS),
            )
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    for i, row in enumerate(rows):
        for column in ("w", "lambda", "selected"):
            _float(row[column], column, f"row {i + 2}", path)
    return rows
