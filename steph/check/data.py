"""Checks of a cancer's inputs: labels, splits and features (what ``train-source`` will read).

Unlike the stages, which stop at the first problem, every problem is recorded and the next
item is checked: a bad fold does not hide the next fold, a bad slide not the next slide.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import TYPE_CHECKING

import torch

from ..data.bags import check_encoder, check_patch_count, missing_slides, slide_refs
from ..data.cohort import Cohort, load_cohort, read_split_cells
from ..data.features import read_slide, slide_shape
from ..errors import StephError
from ..progress import Progress
from .findings import CheckReport

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..data.stores import SlideRef
    from ..layout import ProjectLayout

SHOWN = 10
MONTHS_SUSPECT_DAYS = 400.0
"""A cohort whose longest follow-up is below this many days probably has times in months."""


def _listing(items: list[str]) -> str:
    return ", ".join(items[:SHOWN]) + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def check_labels(
    layout: ProjectLayout, config: ProjectConfig, cancer: str, report: CheckReport
) -> Cohort | None:
    """Labels load, and their times and events make sense."""
    try:
        cohort = load_cohort(layout, config, cancer)
    except StephError as exc:
        report.error(cancer, "labels", exc.message, exc.hint)
        return None
    report.counts[cancer].labelled = len(cohort.patients)
    times = [p.t for p in cohort.patients.values()]
    events = sum(p.e for p in cohort.patients.values())
    where = str(cohort.labels_path)
    if events == 0:
        report.error(
            cancer,
            "times/events",
            f"{where}: no patient has an event (e = 1); the C-index is undefined and the loss has no signal",
            hint=f"check the event column (labels.event = {config.labels.event!r})",
        )
    elif max(times) < MONTHS_SUSPECT_DAYS and config.labels.time_unit == "days":
        report.warn(
            cancer,
            "times/events",
            f"{where}: the longest follow-up is {max(times):g} days; are the times in months?",
            hint="set labels.time_unit: months in stephctl.yaml if so",
        )
    elif sum(t == 0 for t in times) > len(times) / 2:
        report.warn(cancer, "times/events", f"{where}: most follow-up times are 0")
    else:
        report.passed(
            cancer,
            "times/events",
            f"{len(times)} patients, {events} events, median follow-up {statistics.median(times):.0f} days",
        )
    return cohort


def check_splits(
    layout: ProjectLayout, config: ProjectConfig, cohort: Cohort, report: CheckReport
) -> set[str]:
    """Every fold: leakage, patients without labels, duplicates, training set vs batch size.

    Returns the patients found in any split.
    """
    cancer = cohort.cancer
    folds = list(config.train.folds or layout.split_folds(cancer))
    report.counts[cancer].folds = folds
    if not folds:
        report.error(
            cancer,
            "splits",
            f"no split files found (looked for {layout.split(cancer, 0)})",
            hint="write splits_<k>.csv with train and test columns, or set paths.splits",
        )
        return set()
    in_splits: set[str] = set()
    problems = 0
    for fold in folds:
        try:
            path, cells = read_split_cells(layout, cancer, fold)
        except StephError as exc:
            report.error(cancer, "splits", exc.message, exc.hint)
            problems += 1
            continue
        roles: dict[str, set[str]] = {}
        counts = Counter((c.patient_id, c.role) for c in cells)
        for cell in cells:
            roles.setdefault(cell.patient_id, set()).add(cell.role)
        in_splits.update(roles)
        unknown = sorted(pid for pid in roles if pid not in cohort.patients)
        if unknown:
            problems += 1
            report.error(
                cancer,
                "split patients without labels",
                f"{path}: {len(unknown)} patient(s) not in the labels {cohort.labels_path}: {_listing(unknown)}",
                hint="add them to the labels or remove them from the split",
            )
        leaked = sorted(pid for pid, r in roles.items() if len(r) > 1)
        if leaked:
            problems += 1
            report.error(
                cancer,
                "leakage",
                f"{path}: {len(leaked)} patient(s) in more than one set of fold {fold}: {_listing(leaked)}",
                hint="a patient must be in exactly one of train/val/test of a fold; fix the split file",
            )
        repeated = sorted({pid for (pid, _), n in counts.items() if n > 1})
        if repeated:
            problems += 1
            report.error(
                cancer, "splits", f"{path}: patient(s) listed twice in one set: {_listing(repeated)}"
            )
        train = [c.patient_id for c in cells if c.role == "train"]
        test = [c.patient_id for c in cells if c.role == "test"]
        if len(train) < config.train.batch_size:
            problems += 1
            report.error(
                cancer,
                "fold vs batch size",
                f"{path}: fold {fold} has {len(train)} training patient(s), fewer than train.batch_size "
                f"{config.train.batch_size}: it would train 0 steps",
                hint="lower train.batch_size in stephctl.yaml or give the fold more training patients",
            )
        if not test:
            problems += 1
            report.error(cancer, "splits", f"{path}: the test set of fold {fold} is empty")
        elif not any(cohort.patients[p].e for p in test if p in cohort.patients):
            report.warn(
                cancer,
                "splits",
                f"{path}: no events in the test set of fold {fold}; its C-index is undefined",
            )
    report.counts[cancer].in_splits = len(in_splits)
    _check_splits_record(layout, cohort, report)
    if not problems:
        report.passed(
            cancer, "splits", f"folds {', '.join(map(str, folds))}: no leakage, every patient labelled"
        )
    return in_splits


def _check_splits_record(layout: ProjectLayout, cohort: Cohort, report: CheckReport) -> None:
    """Report how ``stephctl splits`` made the split files, and labels changed since."""
    from ..fileio import sha256_file
    from ..records import SplitsRecord

    path = layout.splits_record(cohort.cancer)
    if not path.is_file():
        return
    try:
        record = SplitsRecord.read(path)
    except StephError as exc:
        report.warn(cohort.cancer, "splits", exc.message, exc.hint)
        return
    val = f", validation fraction {record.val_fraction:g}" if record.val_fraction else ""
    report.passed(
        cohort.cancer,
        "splits",
        f"made by `stephctl splits`: {record.folds} folds of {record.patients} patients, seed {record.seed}, "
        f"stratified by {' and '.join(record.stratified_by) or 'nothing'}{val}",
    )
    labels = cohort.labels_path
    changed = labels is not None and labels.is_file() and sha256_file(labels) != record.labels_sha256
    if record.labels_sha256 and changed:
        report.warn(
            cohort.cancer,
            "splits",
            f"{labels} changed since the splits were made ({path})",
            hint="new patients have no fold: `stephctl splits --overwrite` remakes them (retrain after)",
        )


def check_features(
    layout: ProjectLayout,
    config: ProjectConfig,
    cohort: Cohort,
    report: CheckReport,
    *,
    deep: bool,
    progress: Progress,
) -> int | None:
    """Every labelled patient's slides: present, readable, one D, the project's encoder; with
    ``deep``, every value finite. Returns the cancer's D (None when nothing could be read)."""
    cancer = cohort.cancer
    try:
        refs = slide_refs(layout, config, cohort, list(cohort.patients))
        flat = [ref for slides in refs.values() for ref in slides]
        missing = {(ref.path, ref.key) for ref in missing_slides(flat)}
    except StephError as exc:
        report.error(cancer, "features", exc.message, exc.hint)
        return None
    if missing:
        names = [ref.slide_id for ref in flat if (ref.path, ref.key) in missing]
        example = next(ref for ref in flat if (ref.path, ref.key) in missing)
        report.error(
            cancer,
            "missing features",
            f"{len(names)} of {len(flat)} slide(s) have no features (e.g. {example}): {_listing(names)}",
            hint=f"check paths.features ({layout.templates.features!r})"
            if layout.templates.features
            else f"run `stephctl -p {layout.root} extract`",
        )
    unreadable: list[str] = []
    wrong_encoder: list[str] = []
    not_finite: list[str] = []
    hints: dict[str, str | None] = {}
    dims: dict[int, list[str]] = {}
    good: set[str] = set()
    task = f"checking {cancer} features"
    progress.start(task, len(flat), unit="slides")
    try:
        for pid, slides in refs.items():
            ok = True
            for ref in slides:
                progress.advance(task, 1, item=ref.slide_id)
                if (ref.path, ref.key) in missing:
                    ok = False
                    continue
                ok = (
                    _check_slide(config, ref, deep, dims, unreadable, wrong_encoder, not_finite, hints) and ok
                )
            if ok:
                good.add(pid)
    finally:
        progress.finish(task)
    report.counts[cancer].with_features = len(good)
    for check, items in (
        ("unreadable features", unreadable),
        ("encoder", wrong_encoder),
        ("NaN/inf", not_finite),
    ):
        if items:
            report.error(
                cancer,
                check,
                f"{len(items)} slide(s): " + "; ".join(items[:3]) + ("; ..." if len(items) > 3 else ""),
                hints.get(check),
            )
    if len(dims) > 1:
        listing = ", ".join(
            f"D={d}: {len(files)} slide(s) (e.g. {files[0]})" for d, files in sorted(dims.items())
        )
        report.error(
            cancer,
            "feature dimension",
            f"slides disagree on D: {listing}",
            hint="all slides must come from one encoder",
        )
    elif dims and not (missing or unreadable or wrong_encoder or not_finite):
        scanned = ", values finite" if deep else ""
        report.passed(
            cancer,
            "features",
            f"{len(flat)} slide(s), D={next(iter(dims))}, encoder {config.encoder}{scanned}",
        )
    if not dims:
        return None
    dim = max(dims, key=lambda d: len(dims[d]))
    report.counts[cancer].dim = dim
    return dim


def _check_slide(
    config: ProjectConfig,
    ref: SlideRef,
    deep: bool,
    dims: dict[int, list[str]],
    unreadable: list[str],
    wrong_encoder: list[str],
    not_finite: list[str],
    hints: dict[str, str | None],
) -> bool:
    try:
        k, d = slide_shape(ref)
        check_patch_count(config, ref, k)
    except StephError as exc:
        unreadable.append(exc.message)
        hints.setdefault("unreadable features", exc.hint)
        return False
    dims.setdefault(d, []).append(str(ref))
    try:
        check_encoder(config, ref)
    except StephError as exc:
        wrong_encoder.append(exc.message)
        hints.setdefault("encoder", exc.hint)
        return False
    if deep:
        try:
            values = read_slide(ref)
        except StephError as exc:
            unreadable.append(exc.message)
            hints.setdefault("unreadable features", exc.hint)
            return False
        if not bool(torch.isfinite(values).all()):
            not_finite.append(f"{ref}: NaN or inf values")
            hints.setdefault(
                "NaN/inf", "re-extract these slides (`stephctl extract --overwrite`) or re-download them"
            )
            return False
    return True
