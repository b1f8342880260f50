"""Stage ``train-source``: one cancer-specific ABMIL per (cancer, fold), all from theta0.

Every input is validated before the first model trains: labels, the split of every requested
fold, and the existence, readability and dimension of every feature file (see docs/train-source.md); a cancer with a bad input fails its own units and the others
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
from ..data import Cohort, Split, check_features, load_cohort, load_split, open_bags
from ..errors import ConsistencyError, StephError
from ..fileio import sha256_file
from ..layout import CANCER_SPECIFIC, normalize_cancer
from ..locks import hold
from ..logs import run_log
from ..models.abmil import create_abmil
from ..predictions import format_c
from ..progress import NULL_PROGRESS, Progress
from ..report import StageReport, Status
from ..runtime import resolve_device, set_deterministic
from ..theta0 import Theta0, check_abmil_state, ensure_theta0, load_theta0, theta0_dim_in
from ..units import ModelUnit, Outcome, UnitLock, run_units
from ._source_model import UnitContext, prepare_outputs, train_unit, write_meta, write_outputs
from .plans import TRAIN_SOURCE as STAGE
from .plans import plan_train_source

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..data import BagStore
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)


def _validate(
    layout: ProjectLayout, config: ProjectConfig, units: Sequence[ModelUnit]
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
        cancer, fold = unit.cancer, unit.fold
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
            failed.update({u.key: exc for u in units if u.cancer == cancer and u.fold in splits})
            del prepared[cancer]
    if len(dims) > 1:
        listing = ", ".join(f"{c} D={d}" for d, c in dims.items())
        raise ConsistencyError(
            f"feature dimensions differ between cancers ({listing}); all models share one theta0",
            hint=f"extract every cancer with the same encoder (encoder: {config.encoder})",
        )
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
    """Train the cancer-specific models of ``cancers`` x ``folds`` (default: all): the stage
    ``train-source`` on :func:`plan_train_source` (:func:`run_models`).

    A bad input of one cancer (labels, a split, features) fails that cancer's units (that fold's,
    for a split), named in the report with its fix; the other cancers still train.

    Raises:
        MissingArtifactError, DataError, ConfigError: every unit to run fails before training
            because of one input (e.g. the only requested cancer's labels); nothing is written.
        ConsistencyError: the cancers' feature dimensions differ.
    """
    units = plan_train_source(layout, config, cancers=cancers, folds=folds)
    return run_models(layout, config, units, overwrite=overwrite, progress=progress)


def run_models(
    layout: ProjectLayout,
    config: ProjectConfig,
    units: Sequence[ModelUnit],
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Train ``units`` (of :func:`plan_train_source`): every input is checked first
    (:meth:`TrainSourceWorker.prepare`), then each unit trains under its lock (:func:`run_units`)."""
    worker = TrainSourceWorker.prepare(
        layout, config, [u for u in units if overwrite or not u.done], progress
    )
    if worker.dim is None:  # nothing to run, or every unit to run failed its checks
        return run_units(STAGE, units, worker, overwrite=overwrite, progress=progress, unit_name="models")
    set_deterministic(True)
    with run_log(layout.stage_log(STAGE, time.strftime("%Y%m%d-%H%M%S"))):
        worker.theta0 = ensure_theta0(layout, config, worker.dim)
        report = run_units(STAGE, units, worker, overwrite=overwrite, progress=progress, unit_name="models")
    report.outputs["theta0_sha256"] = worker.theta0.sha256
    return report


class TrainSourceWorker:
    """Trains one (cancer, fold) unit. Labels, splits and features of every unit to run are
    checked, and theta0 loaded or created, once before the first unit (:meth:`prepare`); each
    cancer's bags are read once, for all its folds, when its first unit runs."""

    def __init__(
        self,
        layout: ProjectLayout,
        config: ProjectConfig,
        prepared: dict[str, tuple[Cohort, dict[int, Split]]],
        dim: int | None,
        failed: dict[str, StephError],
        progress: Progress,
    ) -> None:
        self.layout, self.config, self.progress = layout, config, progress
        self.prepared, self.dim, self.failed = prepared, dim, failed
        self.theta0: Theta0 | None = None
        """Loaded or created by the caller once the inputs passed (:func:`ensure_theta0`)."""
        self.bags: dict[str, BagStore | StephError] = {}
        self.device = resolve_device(config.train.device) if dim is not None else None

    @classmethod
    def prepare(
        cls, layout: ProjectLayout, config: ProjectConfig, units: Sequence[ModelUnit], progress: Progress
    ) -> TrainSourceWorker:
        """Check the inputs of ``units`` (:func:`_validate`); nothing is checked without units.

        Raises:
            MissingArtifactError, DataError, ConfigError: every unit fails because of one input;
                nothing is written.
            ConsistencyError: the cancers' feature dimensions differ.
        """
        if not units:
            return cls(layout, config, {}, None, {}, progress)
        prepared, dim, failed = _validate(layout, config, units)
        if dim is None and len({id(exc) for exc in failed.values()}) == 1:
            raise next(iter(failed.values()))  # one input error stops every unit: exit 1, no theta0
        return cls(layout, config, prepared, dim, failed, progress)

    def refuse(self, unit: ModelUnit) -> str | None:
        if unit.key in self.failed:
            return str(self.failed[unit.key])
        if unit.cancer not in self.prepared:
            return f"{unit.key}: its inputs were not checked"  # only units of prepare() run
        bags = self._bags(unit.cancer)
        if isinstance(bags, StephError):
            return bags.message
        split = self.prepared[unit.cancer][1][unit.fold]
        return too_few_for_a_batch(len(split.train), self.config.train.batch_size, unit.key, STAGE)

    def _bags(self, cancer: str) -> BagStore | StephError:
        """The bags of every patient of ``cancer``'s splits, read once (every value: NaN/inf
        surface here, before the cancer trains); the error instead when they cannot be read."""
        if cancer not in self.bags:
            cohort, splits = self.prepared[cancer]
            try:
                self.bags[cancer] = open_bags(
                    self.layout, self.config, cohort, _patients(splits.values()), progress=self.progress
                )
            except StephError as exc:
                log.error("%s: %s", cancer, exc)
                self.bags[cancer] = exc
        return self.bags[cancer]

    def skipped(self, unit: ModelUnit, *, by_other: bool) -> Outcome:
        why = "trained by another process" if by_other else "already trained (--overwrite to retrain)"
        return Outcome(Status.SKIPPED, why)

    def lock(self, unit: ModelUnit) -> UnitLock:
        return UnitLock(
            self.layout.model_weights(unit.cancer, unit.fold),
            f"{unit.key} model",
            (self.layout.results_dir(unit.cancer, CANCER_SPECIFIC, unit.fold),),
            where=unit.key,
        )

    def run(self, unit: ModelUnit) -> Outcome:
        cohort, splits = self.prepared[unit.cancer]
        bags = self._bags(unit.cancer)
        assert self.theta0 is not None and self.device is not None and not isinstance(bags, StephError)
        ctx = UnitContext(self.layout, self.config, cohort, splits[unit.fold], bags, self.theta0, self.device)
        metrics = train_unit(ctx, progress=self.progress)
        return Outcome(
            Status.DONE,
            f"test C-index {format_c(metrics['c_index'])} (n={metrics['n']}, events={metrics['events']})",
            {"c_index": metrics["c_index"], "n": metrics["n"], "events": metrics["events"]},
        )


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
            hint="import the null model of the same release first (`stephctl import-reference --theta0 PATH`)",
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
