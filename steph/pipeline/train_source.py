"""Stage ``train-source``: one cancer-specific ABMIL per (cancer, fold), all from theta0.

Every input is validated before the first model trains: labels, the split of every requested
fold, and the existence, readability and dimension of every feature file (STEPH_SPEC sections
1-5; see docs/train-source.md); a cancer with a bad input fails its own units and the others
go on. Then theta0 is loaded (or created once), each cancer's bags are read once for all its
folds, and each (cancer, fold) trains under a lock on its weights file.
A unit is done when ``model.safetensors``, ``metrics.json`` and ``meta.json`` exist (meta.json is
written last); done units are skipped unless ``overwrite``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..checkpoints import load_reference_checkpoint
from ..config.project import project_cancers, project_folds
from ..data import Cohort, Split, check_features, load_cohort, load_split, open_bags
from ..errors import ConfigError, ConsistencyError, LockedError, MissingArtifactError, StephError
from ..faults import point
from ..fileio import os_error_message, sha256_file
from ..layout import CANCER_SPECIFIC, normalize_cancer
from ..locks import hold
from ..logs import run_log
from ..models.abmil import create_abmil
from ..predictions import format_c
from ..progress import NULL_PROGRESS, Progress
from ..report import StageReport, Status
from ..runtime import resolve_device, set_deterministic
from ..theta0 import check_abmil_state, ensure_theta0, load_theta0, theta0_dim_in
from ..units import WorkUnit
from ._source_model import UnitContext, prepare_outputs, train_unit, write_meta, write_outputs

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)

STAGE = "train-source"


def resolve_cancers(layout: ProjectLayout, config: ProjectConfig, cancers: Sequence[str] | None) -> list[str]:
    """``cancers`` if given, else ``cancers:`` of stephctl.yaml, else every labels/<CANCER>.csv."""
    names = [normalize_cancer(c) for c in cancers] if cancers else project_cancers(layout, config)
    if not names:
        raise ConfigError(
            "no cancers to train",
            hint=f"list them under cancers: in {layout.config_file}, pass --cancer, or add labels/<CANCER>.csv",
        )
    return names


def resolve_folds(
    layout: ProjectLayout, config: ProjectConfig, cancer: str, folds: Sequence[int] | None
) -> list[int]:
    """``folds`` if given, else :func:`project_folds`."""
    chosen = list(folds) if folds else project_folds(layout, config, cancer)
    if not chosen:
        raise MissingArtifactError(
            f"{cancer}: no split files found ({layout.split(cancer, 0)})",
            hint="write splits_<k>.csv files with train and test columns, or set paths.splits",
        )
    return chosen


def plan_train_source(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
) -> list[WorkUnit]:
    """The (cancer, fold) units of the stage, done or not."""
    units = []
    for cancer in resolve_cancers(layout, config, cancers):
        for fold in resolve_folds(layout, config, cancer, folds):
            outputs = (
                layout.model_weights(cancer, fold),
                layout.model_metrics(cancer, fold),
                layout.model_meta(cancer, fold),
            )
            units.append(WorkUnit(STAGE, f"{cancer}/fold_{fold}", outputs, {"cancer": cancer, "fold": fold}))
    return units


def _validate(
    layout: ProjectLayout, config: ProjectConfig, units: Sequence[WorkUnit]
) -> tuple[dict[str, tuple[Cohort, dict[int, Split]]], int | None, dict[str, StephError]]:
    """Load and check every cohort, split and feature file of ``units``.

    A cancer's bad input (labels, a split, a feature file or store) fails only the units it
    concerns: it is returned by unit key, and that cancer (or fold) is left out of the result.

    Returns:
        The cohorts and splits that passed, their ``D`` (None if none passed), and the error
        of every failed unit.

    Raises:
        ConsistencyError: the cancers that passed disagree on ``D`` (they share one theta0).
    """
    prepared: dict[str, tuple[Cohort, dict[int, Split]]] = {}
    failed: dict[str, StephError] = {}
    bad_labels: dict[str, StephError] = {}
    for unit in units:
        cancer, fold = unit.params["cancer"], unit.params["fold"]
        if cancer in bad_labels:
            failed[unit.key] = bad_labels[cancer]
            continue
        try:
            if cancer not in prepared:
                prepared[cancer] = (load_cohort(layout, config, cancer), {})
            cohort, splits = prepared[cancer]
            splits[fold] = load_split(layout, cohort, fold)
        except StephError as exc:
            failed[unit.key] = exc
            if cancer not in prepared:
                bad_labels[cancer] = exc
    dims: dict[int, str] = {}
    expected = theta0_dim_in(layout)  # an existing theta0: files of another D are refused unread
    for cancer, (cohort, splits) in list(prepared.items()):
        if not splits:  # every requested fold failed on its split file
            del prepared[cancer]
            continue
        try:
            dim = check_features(
                layout,
                config,
                cohort,
                _patients(splits.values()),
                dim=expected,
                dim_of=f"theta0 {layout.theta0}",
            )
            dims.setdefault(dim, cancer)
        except StephError as exc:
            failed.update(
                {u.key: exc for u in units if u.params["cancer"] == cancer and u.params["fold"] in splits}
            )
            del prepared[cancer]
    if len(dims) > 1:
        listing = ", ".join(f"{c} D={d}" for d, c in dims.items())
        raise ConsistencyError(
            f"feature dimensions differ between cancers ({listing}); all models share one theta0",
            hint=f"extract every cancer with the same encoder (encoder: {config.encoder})",
        )
    for key, exc in failed.items():
        log.error("%s: %s", key, exc)
    return prepared, next(iter(dims), None), failed


def _patients(splits: Iterable[Split]) -> list[str]:
    """Every patient of ``splits`` (train then test, first occurrence order)."""
    ids: dict[str, None] = {}
    for split in splits:
        ids.update(dict.fromkeys(split.train))
        ids.update(dict.fromkeys(split.test))
    return list(ids)


def train_source_models(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Train the cancer-specific models of ``cancers`` x ``folds`` (default: all).

    A bad input of one cancer (labels, a split, features) fails that cancer's units (that fold's,
    for a split), named in the report with its fix; the other cancers still train.

    Raises:
        MissingArtifactError, DataError, ConfigError: every unit to run fails before training
            because of one input (e.g. the only requested cancer's labels); nothing is written.
        ConsistencyError: the cancers' feature dimensions differ.
    """
    report = StageReport(STAGE)
    todo = []
    for unit in plan_train_source(layout, config, cancers=cancers, folds=folds):
        if unit.done and not overwrite:
            report.add(unit.key, Status.SKIPPED, "already trained (--overwrite to retrain)")
        else:
            todo.append(unit)
    if not todo:
        return report
    prepared, dim, failed = _validate(layout, config, todo)
    if dim is None and len({id(exc) for exc in failed.values()}) == 1:
        raise next(iter(failed.values()))  # one input error stops every unit: exit 1, no theta0
    for unit in todo:
        if unit.key in failed:
            report.add(unit.key, Status.FAILED, str(failed[unit.key]))
    todo = [unit for unit in todo if unit.key not in failed]
    if dim is None:
        return report
    device = resolve_device(config.train.device)
    set_deterministic(True)
    with run_log(layout.stage_log(STAGE, time.strftime("%Y%m%d-%H%M%S"))):
        theta0 = ensure_theta0(layout, config, dim)
        report.outputs["theta0_sha256"] = theta0.sha256
        progress.start(STAGE, len(todo), unit="models")
        for cancer, (cohort, splits) in prepared.items():
            units = [u for u in todo if u.params["cancer"] == cancer]
            try:  # reads every value: NaN/inf surface here, before this cancer trains
                bags = open_bags(layout, config, cohort, _patients(splits.values()), progress=progress)
            except StephError as exc:
                log.error("%s: %s", cancer, exc)
                for unit in units:
                    report.add(unit.key, Status.FAILED, exc.message)
                progress.advance(STAGE, len(units))
                continue
            for unit in units:
                ctx = UnitContext(layout, config, cohort, splits[unit.params["fold"]], bags, theta0, device)
                _run_unit(ctx, unit, overwrite, report, progress)
                progress.advance(STAGE, 1, item=unit.key)
        progress.finish(STAGE)
    return report


def too_few_for_a_batch(n_train: int, batch_size: int, where: str, stage: str) -> str | None:
    """Why a fold cannot train (fewer training patients than one batch: 0 optimiser steps), or None.

    Training uses full batches only, so such a fold would end with the model equal to theta0
    (a zero task vector) and be recorded as done; it is refused before training instead.
    """
    if n_train >= batch_size:
        return None
    return (
        f"{where}: {n_train} training patient(s), fewer than train.batch_size = {batch_size}, "
        "so an epoch has 0 optimiser steps and the model would stay at theta0 "
        f"(hint: set train.batch_size to at most {max(n_train, 1)} in stephctl.yaml, or use folds "
        f"with more training patients, then rerun `stephctl {stage}`)"
    )


def _run_unit(
    ctx: UnitContext, unit: WorkUnit, overwrite: bool, report: StageReport, progress: Progress
) -> None:
    why = too_few_for_a_batch(len(ctx.split.train), ctx.config.train.batch_size, unit.key, STAGE)
    if why is not None:
        log.error("%s", why)
        report.add(unit.key, Status.FAILED, why)
        return
    try:
        with hold(
            ctx.layout.model_weights(ctx.cancer, ctx.fold),
            what=f"{unit.key} model",
            stage=STAGE,
            temp_dirs=[ctx.layout.results_dir(ctx.cancer, CANCER_SPECIFIC, ctx.fold)],
        ):
            if unit.done and not overwrite:  # another process finished it meanwhile
                report.add(unit.key, Status.SKIPPED, "trained by another process")
                return
            point(f"{STAGE}:locked")
            metrics = train_unit(ctx, progress=progress)
    except LockedError as exc:
        report.add(unit.key, Status.LOCKED, str(exc))
        return
    except StephError as exc:
        log.error("%s failed: %s", unit.key, exc)
        report.add(unit.key, Status.FAILED, str(exc))
        return
    except OSError as exc:
        message = os_error_message(exc, unit.key)
        log.error("%s", message)
        report.add(unit.key, Status.FAILED, message)
        return
    report.add(
        unit.key,
        Status.DONE,
        f"test C-index {format_c(metrics['c_index'])} (n={metrics['n']}, events={metrics['events']})",
        c_index=metrics["c_index"],
        n=metrics["n"],
        events=metrics["events"],
    )


def import_checkpoint(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancer: str,
    fold: int,
    path: Path,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Bring a reference ``.pth`` checkpoint (key ``model``) into the layout as (cancer, fold).

    The model is evaluated on the fold's test split, so the unit gets the same files as a
    trained one. theta0 must exist first (usually the authors' null model, imported with
    :func:`steph.theta0.import_theta0`): a task vector is only meaningful against the
    initialisation the model was trained from, which a checkpoint does not record.

    Raises:
        MissingArtifactError: no theta0, or missing labels, split or features.
        ConsistencyError: the checkpoint's architecture differs from theta0's or the features'.
        DataError: the file is not an ABMIL checkpoint.
    """
    cancer = normalize_cancer(cancer)
    report = StageReport(STAGE)
    key = f"{cancer}/fold_{fold}"
    unit = plan_train_source(layout, config, cancers=[cancer], folds=[fold])[0]
    if unit.done and not overwrite:
        report.add(key, Status.SKIPPED, "a model already exists (--overwrite to replace it)")
        return report
    theta0 = load_theta0(layout, model=config.model)
    state = load_reference_checkpoint(path)
    arch = check_abmil_state(state, str(path))
    if arch != theta0.architecture:
        raise ConsistencyError(
            f"{path}: architecture {arch} differs from theta0's {theta0.architecture}",
            hint="import the null model of the same release with --import-theta0 first",
        )
    prepared, dim, failed = _validate(layout, config, [unit])
    if failed:
        raise failed[key]
    cohort, splits = prepared[cancer]
    if dim != arch["dim_in"]:
        raise ConsistencyError(f"{path}: dim_in {arch['dim_in']} but the {cancer} features have D={dim}")
    bags = open_bags(layout, config, cohort, _patients(splits.values()), progress=progress)
    ctx = UnitContext(layout, config, cohort, splits[fold], bags, theta0, resolve_device(config.train.device))
    model = create_abmil(dim, config.model)
    model.load_state_dict(state)
    with hold(
        layout.model_weights(cancer, fold),
        what=f"{key} model",
        stage=STAGE,
        temp_dirs=[layout.results_dir(cancer, CANCER_SPECIFIC, fold)],
    ):
        prepare_outputs(layout, cancer, fold)
        train = cohort.targets(ctx.split.train, config.model)
        test = cohort.targets(ctx.split.test, config.model)
        written = write_outputs(ctx, model, train, test, {"history": [], "imported": True})
        write_meta(
            ctx,
            written,
            {"epochs": None, "imported_from": str(Path(path).resolve()), "source_sha256": sha256_file(path)},
        )
    c_index = written.metrics["c_index"]
    report.add(key, Status.DONE, f"imported; test C-index {format_c(c_index)}", c_index=c_index)
    return report
