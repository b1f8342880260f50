"""Labels, event-stratified splits and the ground truth of a generated cohort, in the layout's formats."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import to_plain
from ..errors import DataError, MissingArtifactError
from ..fileio import read_csv, write_csv
from ..layout import ProjectLayout
from ..metrics.harrell import harrell_c
from ..records import CohortRecord
from .cohort import PHENOTYPES, CancerCohort, CohortSpec, cancer_rng

LABEL_COLUMNS = ("patient_id", "slide_id", "t", "e")
TRUTH_COLUMNS = ("cancer", "patient_id", "risk", "t", "e")
GENERATOR_VERSION = 1
"""Bumped whenever the generative model changes, so a stored cohort is never silently reused."""


def stratified_folds(
    patient_ids: Sequence[str], events: Sequence[int], folds: int, rng: np.random.Generator
) -> list[list[str]]:
    """Assign patients to ``folds`` test groups, stratified by event.

    Events and censored patients are shuffled separately and dealt round-robin, the censored
    deal continuing where the events stopped, so every group gets ``floor`` or ``ceil`` of
    ``n_events / folds`` events and groups differ in size by at most one patient.
    """
    groups: list[list[str]] = [[] for _ in range(folds)]
    offset = 0
    for stratum in (1, 0):
        members = [pid for pid, e in zip(patient_ids, events, strict=True) if int(e) == stratum]
        order = rng.permutation(len(members))
        for j, index in enumerate(order):
            groups[(offset + j) % folds].append(members[index])
        offset += len(members)
    return groups


def write_labels(layout: ProjectLayout, cohort: CancerCohort) -> None:
    """``labels/<CANCER>.csv``: one row per slide (patient_id, slide_id, t, e)."""
    rows = []
    for i, pid in enumerate(cohort.patient_ids):
        for slide_id in cohort.slide_ids[i]:
            rows.append([pid, slide_id, int(cohort.time[i]), int(cohort.event[i])])
    write_csv(layout.labels(cohort.name), LABEL_COLUMNS, rows)


def write_splits(layout: ProjectLayout, cohort: CancerCohort, spec: CohortSpec) -> list[list[str]]:
    """``splits/<CANCER>/splits_<k>.csv`` (columns train, test); returns the test group of each fold."""
    rng = cancer_rng(spec.seed, cohort.name, 2)
    groups = stratified_folds(cohort.patient_ids, cohort.event.tolist(), spec.folds, rng)
    for k, test in enumerate(groups):
        held_out = set(test)
        write_split(layout, cohort.name, k, [pid for pid in cohort.patient_ids if pid not in held_out], test)
    return groups


def write_split(
    layout: ProjectLayout, cancer: str, fold: int, train: Sequence[str], test: Sequence[str]
) -> None:
    """``splits/<CANCER>/splits_<fold>.csv``: columns train and test, the shorter padded with ""."""
    n_rows = max(len(train), len(test))
    cells = [[train[r] if r < len(train) else "", test[r] if r < len(test) else ""] for r in range(n_rows)]
    write_csv(layout.split(cancer, fold), ["train", "test"], cells)


def write_truth(
    layout: ProjectLayout,
    spec: CohortSpec,
    cohorts: dict[str, CancerCohort],
    *,
    level: str,
    extra: dict[str, Any],
) -> None:
    """``synthetic/truth.csv`` (true risk and phenotype mix per patient) and ``synthetic/cohort.json``."""
    names = PHENOTYPES[: spec.phenotypes]
    rows = []
    for cohort in cohorts.values():
        for i, pid in enumerate(cohort.patient_ids):
            mix = [round(float(p), 6) for p in cohort.proportions[i]]
            rows.append(
                [cohort.name, pid, float(cohort.risk[i]), int(cohort.time[i]), int(cohort.event[i]), *mix]
            )
    write_csv(layout.synthetic_truth, [*TRUTH_COLUMNS, *(f"p_{name}" for name in names)], rows)
    describe(spec, cohorts, level=level, extra=extra).write(layout.synthetic_spec)


def plain_spec(spec: CohortSpec) -> dict[str, Any]:
    """``spec`` as stored in ``synthetic/cohort.json``; ``shared_prevalence`` and
    ``exact_sharing`` only when set, so a cohort generated before these options existed is
    recognised as the same cohort."""
    plain: dict[str, Any] = to_plain(spec)
    for option in ("shared_prevalence", "exact_sharing"):
        if not plain[option]:
            del plain[option]
    return plain


def describe(
    spec: CohortSpec, cohorts: dict[str, CancerCohort], *, level: str, extra: dict[str, Any]
) -> CohortRecord:
    """The record stored in ``synthetic/cohort.json``: spec, level and per-cancer statistics."""
    data = {
        "generator_version": GENERATOR_VERSION,
        "level": level,
        "spec": plain_spec(spec),
        "phenotypes": list(PHENOTYPES[: spec.phenotypes]),
        "cancers": {
            name: {
                "n_patients": len(c.patient_ids),
                "n_slides": sum(len(s) for s in c.slide_ids),
                "events": int(c.event.sum()),
                "censoring_rate": round(c.censoring_rate, 4),
                "oracle_c_index": round(c.oracle_c_index, 4),
                "median_time_days": float(np.median(c.time)),
                "weibull_scale_days": round(c.scale_days, 1),
                "dropout_rate_per_year": round(c.dropout_rate * 365.0, 5),
                "coefficients": [round(float(b), 4) for b in c.coefficients],
                "prevalence": [round(float(p), 4) for p in c.prevalence],
            }
            for name, c in cohorts.items()
        },
        **extra,
    }
    return CohortRecord.from_json(data, "synthetic/cohort.json")


def oracle_fold_c_index(layout: ProjectLayout, cancer: str) -> list[float]:
    """Harrell's C of the generator's true risk on the test set of each fold of ``cancer``.

    The ceiling a model of this cohort can reach on the same test patients (folds whose test set
    has no comparable pair are left out).

    Raises:
        MissingArtifactError: the project holds no generated cohort.
        DataError: a test patient has no true risk (the splits are not the generator's).
    """
    if not layout.synthetic_truth.is_file():
        raise MissingArtifactError(
            f"{layout.synthetic_truth} does not exist: {layout.root} holds no generated cohort",
            hint="the oracle C-index exists only for cohorts written by steph.synthetic.generate_cohort",
        )
    truth = {r["patient_id"]: r for r in read_csv(layout.synthetic_truth) if r["cancer"] == cancer}
    values = []
    for fold in layout.split_folds(cancer):
        test = [r["test"] for r in read_csv(layout.split(cancer, fold)) if r.get("test")]
        missing = [p for p in test if p not in truth]
        if missing:
            raise DataError(
                f"{layout.synthetic_truth}: no true risk for {missing[0]} (test set of {cancer} fold {fold})"
            )
        rows = [truth[p] for p in test]
        conc = harrell_c(
            [float(r["t"]) for r in rows], [int(r["e"]) for r in rows], [float(r["risk"]) for r in rows]
        )
        if conc.defined:
            values.append(conc.value)
    return values
