"""``stephctl splits``: patient-level K-fold cross-validation splits, stratified by event and time.

For each cancer the patients of its labels (one time ``t`` and event ``e`` per patient) are put
into strata, then dealt to ``K`` test groups:

* **strata**: the patients with an event and the censored ones separately, each cut by time
  into ``q`` consecutive groups of (nearly) equal size, with ``q = min(TIME_BINS, max(1, n_e // K))``
  (``n_e``: patients of that event status), so a stratum has at least ``K`` patients when it can;
* **deal**: strata in order (events first, shortest times first), the patients of a stratum in a
  seeded random order, dealt round-robin to the ``K`` groups, the deal continuing where the
  previous stratum stopped. Every stratum therefore gives each group ``floor`` or ``ceil`` of
  ``n_s / K`` of its patients, the events of a fold differ by at most one between folds, and
  so do the fold sizes.

Fold ``k`` tests group ``k`` and trains on the others. With ``val_fraction = f`` a validation set
of ``round(f n_train)`` patients is taken from each fold's training patients by systematic
sampling along the same strata (positions ``floor((i + u) n_train / n_val)``, ``u ~ U(0, 1)``),
so it is stratified too. No patient is in two sets of one fold; every patient is tested once.

Files: ``splits/<CANCER>/splits_<k>.csv`` (columns ``train,test[,val]``, the layout
train-source reads) and a :class:`~steph.records.SplitsRecord` beside them (how they were made,
the labels' sha256), which ``stephctl check`` reports. Existing split files are never
replaced unless ``overwrite``; then split files of folds beyond ``K`` are removed too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import __version__
from .config import ProjectConfig
from .config.project import project_cancers
from .errors import ConfigError, StephError
from .fileio import sha256_file, write_csv
from .layout import ProjectLayout, normalize_cancer
from .progress import NULL_PROGRESS, Progress
from .records import SplitsRecord
from .report import StageReport, Status

log = logging.getLogger(__name__)

STAGE = "splits"
TIME_BINS = 4
"""At most this many time strata per event status."""


@dataclass(frozen=True)
class Fold:
    """The patient ids of one fold's sets."""

    train: tuple[str, ...]
    test: tuple[str, ...]
    val: tuple[str, ...] = ()


def strata(times: Sequence[float], events: Sequence[int], folds: int) -> list[list[int]]:
    """Indices of the patients in each stratum: by event status (events first), then by time.

    >>> strata([5, 1, 4, 2, 3, 6], [1, 1, 1, 1, 0, 0], 2)
    [[1, 3], [2, 0], [4, 5]]
    """
    out: list[list[int]] = []
    for status in (1, 0):
        members = sorted((i for i, e in enumerate(events) if int(e) == status), key=lambda i: (times[i], i))
        if not members:
            continue
        q = min(TIME_BINS, max(1, len(members) // folds))
        out.extend(part.tolist() for part in np.array_split(np.array(members, dtype=np.int64), q))
    return out


def make_folds(
    ids: Sequence[str],
    times: Sequence[float],
    events: Sequence[int],
    *,
    folds: int,
    seed: int,
    val_fraction: float = 0.0,
) -> list[Fold]:
    """Stratified patient-level K-fold splits of ``ids`` (see the module docstring).

    Raises:
        ConfigError: fewer than two folds, more folds than patients, or a validation fraction
            outside [0, 1) that would leave a training set empty.
    """
    n = len(ids)
    if folds < 2:
        raise ConfigError(f"--folds {folds}: need at least 2 folds", hint="e.g. --folds 5")
    if n < folds:
        raise ConfigError(f"{n} patients cannot make {folds} folds", hint=f"use --folds {max(2, n)} or fewer")
    if len(set(ids)) != n:
        raise ConfigError("patient ids repeat", hint="one time and event per patient")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"--val-fraction {val_fraction}: must be in [0, 1)", hint="e.g. --val-fraction 0.1")
    rng = np.random.default_rng(seed)
    groups: list[list[int]] = [[] for _ in range(folds)]
    order: list[int] = []  # every patient, stratum by stratum, shuffled within its stratum
    for stratum in strata(times, events, folds):
        order.extend(stratum[j] for j in rng.permutation(len(stratum)))
    for position, index in enumerate(order):
        groups[position % folds].append(index)
    out = []
    for k in range(folds):
        held_out = set(groups[k])
        train = [i for i in order if i not in held_out]
        val: list[int] = []
        n_val = round(val_fraction * len(train))
        if n_val >= len(train):
            raise ConfigError(
                f"--val-fraction {val_fraction} leaves fold {k} no training patients",
                hint="lower --val-fraction",
            )
        if n_val:
            u = float(rng.random())
            picked = {math.floor((i + u) * len(train) / n_val) for i in range(n_val)}
            val = [train[p] for p in sorted(picked)]
            chosen = set(val)
            train = [i for i in train if i not in chosen]
        out.append(
            Fold(
                train=tuple(ids[i] for i in sorted(train)),
                test=tuple(ids[i] for i in sorted(groups[k])),
                val=tuple(ids[i] for i in sorted(val)),
            )
        )
    return out


def write_splits(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: Sequence[str] | None = None,
    folds: int = 5,
    seed: int | None = None,
    val_fraction: float = 0.0,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Write stratified K-fold split files for each cancer (default: the project's cancers).

    ``seed`` defaults to the project's ``seed``. A cancer whose labels cannot be read fails
    (the others are still written).

    Raises:
        ConfigError: no cancers; bad ``folds`` or ``val_fraction``; split files exist and
            ``overwrite`` is false (nothing is written then).
    """
    from .data.cohort import load_cohort

    names = [normalize_cancer(c) for c in cancers] if cancers else project_cancers(layout, config)
    if not names:
        raise ConfigError(
            "no cancers to split",
            hint=f"pass --cancer, list them under cancers: in {layout.config_file}, or add labels/<CANCER>.csv",
        )
    seed = config.seed if seed is None else seed
    existing = {c: layout.split_folds(c) for c in names}
    if not overwrite and any(existing.values()):
        found = "; ".join(
            f"{c}: {layout.splits_dir(c)} (folds {', '.join(map(str, f))})" for c, f in existing.items() if f
        )
        raise ConfigError(
            f"split files exist already ({found})",
            hint="models trained on them would no longer match; pass --overwrite to replace them",
        )
    report = StageReport(STAGE)
    progress.start(STAGE, len(names), unit="cancers")
    for cancer in names:
        started = time.perf_counter()
        try:
            cohort = load_cohort(layout, config, cancer)
            patients = list(cohort.patients.values())
            made = make_folds(
                [p.patient_id for p in patients],
                [p.t for p in patients],
                [p.e for p in patients],
                folds=folds,
                seed=seed,
                val_fraction=val_fraction,
            )
        except StephError as exc:
            report.add(cancer, Status.FAILED, str(exc))
            progress.advance(STAGE, 1, item=cancer)
            continue
        for k, fold in enumerate(made):
            columns = ["train", "test", "val"] if val_fraction else ["train", "test"]
            sets = [fold.train, fold.test, fold.val][: len(columns)]
            width = max(len(s) for s in sets)
            rows = [[s[r] if r < len(s) else "" for s in sets] for r in range(width)]
            write_csv(layout.split(cancer, k), columns, rows)
        for stale in (k for k in existing[cancer] if k >= folds):
            layout.split(cancer, stale).unlink(missing_ok=True)
        labels = cohort.labels_path or layout.labels(cancer)
        SplitsRecord(
            cancer=cancer,
            folds=folds,
            seed=seed,
            val_fraction=val_fraction,
            stratified_by=["event", "time"],
            time_bins=TIME_BINS,
            patients=len(patients),
            events=sum(p.e for p in patients),
            labels=str(labels),
            labels_sha256=sha256_file(labels) if labels.is_file() else None,
            version=__version__,
            created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        ).write(layout.splits_record(cancer))
        report.add(
            cancer,
            Status.DONE,
            f"{folds} folds of {len(patients)} patients",
            seconds=time.perf_counter() - started,
        )
        report.outputs[cancer] = str(layout.splits_dir(cancer))
        log.info(
            "%s: %d folds of %d patients (seed %d) in %s",
            cancer,
            folds,
            len(patients),
            seed,
            layout.splits_dir(cancer),
        )
        progress.advance(STAGE, 1, item=cancer)
    progress.finish(STAGE)
    return report
