"""``stephctl merge``: STEPH and the baselines for one target cancer, fold by fold.

A unit is (method variant, target fold). Its outputs are the method's weights (safetensors),
its tables (``coefficients.csv`` for STEPH), the resolved ``config.yaml``, ``merge.log`` and,
written last, ``meta.json`` under ``layout.merged_dir(target, run, fold)``, plus the test-set
``predictions.csv`` / ``metrics.json`` under ``layout.results_dir(target, run, fold)``. ``run``
is the method's folder name (``steph``, ``steph-dense``, ``ties`` ...; see
:meth:`steph.merging.MergeMethod.run_name`). Everything that can be checked is checked before the
first unit trains: target, sources, methods and their options, task vectors, theta0, features.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..bundles.signing import check_trusted_sources
from ..checkpoints import save_state_dict
from ..config import dump_yaml, to_plain
from ..config.merge import MergeConfig
from ..config.project import merge_epochs
from ..data import load_cohort, load_split, open_bags
from ..errors import ConfigError, StephError
from ..fileio import os_error_message, write_csv, write_text
from ..logs import run_log
from ..merging import MERGE_METHODS, MergeContext
from ..merging.autotune import tune
from ..merging.inputs import (
    MergeInputs,
    check_task_vectors,
    for_method,
    load_inputs,
    require_task_vectors,
    resolve_sources,
    target_folds,
)
from ..merging.paper import Variant
from ..predictions import write_predictions
from ..progress import NULL_PROGRESS, Progress
from ..records import MERGE_SIGNATURE, MergeRecord
from ..report import StageReport, Status
from ..runtime import resolve_device, seed_everything, set_deterministic
from ..theta0 import Theta0, check_architecture, load_theta0, versions
from ..training.loop import predict
from ..training.memo import BagMemo, bag_memo, using_memo
from ..training.stacked import UnitsDiverged, fit_stacked, stack_refusal
from ..units import Outcome, UnitLock, run_units
from ._source_model import fit_settings
from .plans import MERGE as STAGE
from .plans import MergeUnit, plan_merge
from .train_source import too_few_for_a_batch

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..config import ProjectConfig
    from ..layout import ProjectLayout
    from ..merging import MergeMethod
    from ..merging.autotune import GammaChoice
    from ..survival import SurvivalTargets

log = logging.getLogger(__name__)
T = TypeVar("T")


def merge_models(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    target: str,
    methods: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
    overwrite: bool = False,
    paper: bool = False,
    runs: Sequence[str] | None = None,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Train and evaluate every planned (method, fold) of ``target`` (:func:`plan_merge`); skip
    finished ones. Without ``folds`` (and ``merge.folds``), a fold without a target task vector
    fails alone; named folds must all have one (:func:`run_merges`).

    Raises (before any training):
        ConfigError: unknown target or source, bad option, fewer sources than top-k.
        UnknownNameError: unknown method.
        MissingArtifactError: task vectors, theta0, labels, splits or features missing.
        ConsistencyError: task vectors from another theta0 or architecture; features whose
            dimension differs from theta0's.
    """
    units = plan_merge(layout, config, target=target, methods=methods, folds=folds, paper=paper, runs=runs)
    named = bool(folds or config.merge.folds)
    return run_merges(layout, config, units, named=named, overwrite=overwrite, progress=progress)


def run_merges(
    layout: ProjectLayout,
    config: ProjectConfig,
    units: Sequence[MergeUnit],
    *,
    named: bool = True,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Run ``units`` (of :func:`plan_merge`, one target): inputs checked first
    (:meth:`MergeWorker.prepare`), then each unit under its lock (:func:`run_units`)."""
    set_deterministic(True)
    worker = MergeWorker.prepare(layout, config, units, named=named, overwrite=overwrite, progress=progress)
    report = run_units(STAGE, units, worker, overwrite=overwrite, progress=progress, unit_name="runs")
    report.outputs["merged"] = [str(layout.merged_dir(u.target, u.run, u.fold)) for u in units]
    report.outputs["results"] = [str(layout.results_dir(u.target, u.run, u.fold)) for u in units]
    return report


def _unit_merge(config: ProjectConfig, unit: MergeUnit) -> MergeConfig:
    """The ``merge:`` settings of one unit: its variant's overrides, only its method's options."""
    method = MERGE_METHODS.get(unit.method)
    variant = Variant(unit.label or method.name, method.name, dict(unit.overrides))
    return for_method(variant.apply(config.merge), method)


def _signature(config: ProjectConfig, unit: MergeUnit, theta0: Theta0) -> dict[str, Any]:
    method = MERGE_METHODS.get(unit.method)
    return {
        "method": method.name,
        "options": method.options(_unit_merge(config, unit)),
        "sources": list(unit.sources),
        "source_fold": unit.source_fold,
        "epochs": merge_epochs(config),
        "seed": config.train.seed,
        "theta0_sha256": theta0.sha256,
    }


def _skipped(config: ProjectConfig, unit: MergeUnit, theta0: Theta0, why: str) -> Outcome:
    """A done unit: skipped when its record has the settings asked for now, else failed."""
    record = MergeRecord.read(unit.outputs[0])
    there, wanted = record.signature(), _signature(config, unit, theta0)
    method = MERGE_METHODS.get(unit.method)
    differs = [
        k
        for k in MERGE_SIGNATURE
        if not (method.same_options(there[k], wanted[k]) if k == "options" else there[k] == wanted[k])
    ]
    if differs:
        detail = "; ".join(f"{k}: {there[k]!r} there, {wanted[k]!r} now" for k in differs)
        return Outcome(
            Status.FAILED, f"exists with other settings ({detail}); rerun with --overwrite to replace it"
        )
    return Outcome(Status.SKIPPED, f"{why} (C-index {record.c_index}); --overwrite to redo")


class MergeWorker:
    """Trains one (method, fold) unit of one target. Before the first unit (:meth:`prepare`),
    every task vector is checked against theta0 and, when some unit will run, the cohort and the
    bags of every patient in the target's splits are read (and checked against theta0) once, so
    bad inputs fail before training."""

    def __init__(
        self,
        layout: ProjectLayout,
        config: ProjectConfig,
        theta0: Theta0 | None,
        no_vector: set[int],
        progress: Progress,
        target: str | None = None,
    ) -> None:
        self.layout, self.config, self.theta0, self.progress = layout, config, theta0, progress
        self.no_vector = no_vector
        self.device: torch.device | None = None
        self._inputs: dict[tuple[Any, ...], MergeInputs] = {}
        if target is None:
            return
        self.device = resolve_device(config.train.device)
        self.cohort = load_cohort(layout, config, target)
        ids: dict[str, None] = {}
        for fold in layout.split_folds(target):
            split = load_split(layout, self.cohort, fold)
            ids.update(dict.fromkeys((*split.train, *split.test)))
        assert theta0 is not None
        self.bags = open_bags(
            layout,
            config,
            self.cohort,
            list(ids),
            dim=theta0.architecture["dim_in"],
            dim_of=f"theta0 {layout.theta0}",
            progress=progress,
        )
        check_architecture(theta0.architecture, config.model, self.bags.dim, f"theta0 {layout.theta0}")

    @classmethod
    def prepare(
        cls,
        layout: ProjectLayout,
        config: ProjectConfig,
        units: Sequence[MergeUnit],
        *,
        named: bool,
        overwrite: bool,
        progress: Progress,
    ) -> MergeWorker:
        """Check every input of ``units`` (one target's) before any training.

        With ``named`` every unit's target task vector must exist; else a fold without one fails
        alone (the target must have some task vector).

        Raises:
            ConfigError: units of several targets.
            MissingArtifactError: task vectors (listed with their commands), theta0, labels,
                splits or features missing.
            ConsistencyError: task vectors from another theta0; features whose dimension
                differs from theta0's.
        """
        if not units:
            return cls(layout, config, None, set(), progress)
        targets = sorted({u.target for u in units})
        if len(targets) > 1:
            raise ConfigError(
                f"merge units of several targets ({', '.join(targets)})", hint="run one target at a time"
            )
        target, first = targets[0], units[0]
        # imported sources: signed, when a trust list is set
        check_trusted_sources(layout, config, resolve_sources(layout, config, target), first.source_fold)
        folds = sorted({u.fold for u in units})
        no_vector: set[int] = set()
        if not named:
            no_vector = {k for k in folds if not layout.task_vector_meta(target, k).is_file()}
            if no_vector == set(folds):
                target_folds(layout, target, None)  # raises when the target has no task vector at all
        needed = [(target, k) for k in folds if k not in no_vector]
        needed += [(s, first.source_fold) for s in dict.fromkeys(s for u in units for s in u.sources)]
        require_task_vectors(layout, needed)
        theta0 = load_theta0(layout, model=config.model)
        check_task_vectors(layout, needed, theta0)
        todo = any((overwrite or not u.done) and u.fold not in no_vector for u in units)
        return cls(layout, config, theta0, no_vector, progress, target if todo else None)

    def refuse(self, unit: MergeUnit) -> str | None:
        if unit.fold in self.no_vector:
            return (
                f"no task vector for the target fold ({self.layout.task_vector_meta(unit.target, unit.fold)}; "
                f"hint: `stephctl -p {self.layout.root} task-vector --cancer {unit.target} --fold {unit.fold}`)"
            )
        return self._too_few(unit)

    def skipped(self, unit: MergeUnit, *, by_other: bool) -> Outcome:
        assert self.theta0 is not None
        return _skipped(self.config, unit, self.theta0, "done by another process" if by_other else "exists")

    def lock(self, unit: MergeUnit) -> UnitLock:
        temps = (self.layout.results_dir(unit.target, unit.run, unit.fold),)
        return UnitLock(unit.outputs[0], f"merge {unit.key}", temps, record=unit.outputs[0])

    def run(self, unit: MergeUnit) -> Outcome:
        with run_log(self._log(unit)):
            return _done(self._train(unit))

    def _too_few(self, unit: MergeUnit) -> str | None:
        """The target fold cannot train (fewer training patients than one batch), or None."""
        if not merge_epochs(self.config):
            return None
        split = load_split(self.layout, self.cohort, unit.fold)
        return too_few_for_a_batch(len(split.train), self.config.train.batch_size, f"merge {unit.key}", STAGE)

    def inputs(self, unit: MergeUnit) -> MergeInputs:
        """The task vectors of ``unit``'s fold, read and checked against their records' sha256
        once per fold and source set, for every unit of the run (at D = 1536 the 13 vectors of
        a fold are about 62 MB to read and hash; the folds trained together, :meth:`run_group`,
        need theirs at once). The tensors are shared by those units: not to be changed in place."""
        assert self.theta0 is not None
        key = (unit.target, unit.fold, tuple(unit.sources), unit.source_fold)
        if key not in self._inputs:
            self._inputs[key] = load_inputs(
                self.layout, unit.target, unit.fold, list(unit.sources), unit.source_fold, self.theta0
            )
        return self._inputs[key]

    def _prepare(self, unit: MergeUnit) -> _Prepared:
        """The unit's context (gamma chosen where it is ``auto``) and untrained model."""
        config, layout, cohort, bags = self.config, self.layout, self.cohort, self.bags
        target, fold = unit.target, unit.fold
        assert self.theta0 is not None and self.device is not None
        method = MERGE_METHODS.get(unit.method)
        merge_config = replace(
            _unit_merge(config, unit), method=method.name, sources=list(unit.sources), folds=[fold]
        )
        split = load_split(layout, cohort, fold)
        inputs = self.inputs(unit)
        signature = _signature(config, unit, self.theta0)
        settings = replace(fit_settings(config), epochs=signature["epochs"])
        ctx = MergeContext(
            target=target,
            fold=fold,
            theta0=inputs.theta0.state,
            target_vector=inputs.target_vector,
            source_names=inputs.source_names,
            source_vectors=inputs.source_vectors,
            config=merge_config,
            model_config=config.model,
            dim_in=bags.dim,
            device=self.device,
            seed=config.train.seed,
            fit_settings=settings,
            train=cohort.targets(split.train, config.model),
            bags=bags,
            cohort=cohort,
            progress=self.progress,
            vector_hashes=tuple(inputs.vector_hashes.values()),
        )
        log.info(
            "merge %s: %d sources (%s), %d train / %d test patients, %d epochs on %s",
            unit.key,
            len(unit.sources),
            ", ".join(unit.sources),
            len(split.train),
            len(split.test),
            settings.epochs,
            self.device,
        )
        ctx, gamma_choice = tune(method, ctx, max_batch_patches=config.train.max_bag_batch_patches)
        seed_everything(config.train.seed)
        model = method.build(ctx)
        return _Prepared(
            unit, method, ctx, model, gamma_choice, signature, split.train, split.test, inputs.vector_hashes
        )

    def _train(self, unit: MergeUnit) -> MergeRecord:
        prepared = self._prepare(unit)
        # per-bag constants of training (ROUPKT's frozen experts) serve the training patients'
        # predictions too: one memo over the unit's training patients, for fit and predict
        with bag_memo(len(prepared.train), ids=prepared.train):
            started = time.perf_counter()
            losses = prepared.method.train(prepared.model, prepared.ctx)
            seconds = time.perf_counter() - started
            return self._finish(prepared, losses, seconds)

    def together(self, units: Sequence[MergeUnit]) -> list[list[MergeUnit]]:
        """``units`` in the groups that train together (:meth:`run_group`), in plan order: a
        method variant's folds whose models stack (:meth:`~steph.merging.MergeMethod.stack`,
        checked when the group runs) with ``train.stack_units`` on; every other unit alone. A
        group stands where its first unit stood."""
        if not self.config.train.stack_units:
            return [[u] for u in units]
        groups: dict[tuple[Any, ...], list[MergeUnit]] = {}
        for unit in units:
            stacks = MERGE_METHODS.get(unit.method).stacked_model is not None
            variant = repr(sorted(unit.overrides.items()))
            key = (unit.method, unit.run, unit.label, variant, unit.sources, unit.source_fold)
            groups.setdefault(key if stacks else (unit.key,), []).append(unit)
        return list(groups.values())

    def run_group(self, units: Sequence[MergeUnit]) -> list[Outcome]:
        """Train ``units`` (one method variant, several folds) together in one optimiser step
        (:func:`~steph.training.stacked.fit_stacked`): each fold's result is its own run's. Where
        they cannot (:func:`~steph.training.stacked.stack_refusal`, or models that do not stack),
        each runs alone. A fold that cannot be prepared or written fails alone; each fold's log
        holds its own preparation and files and the shared training."""
        outcomes: dict[str, Outcome] = {}
        prepared: list[_Prepared] = []
        for unit in units:
            ready = self._guarded(unit, functools.partial(self._prepare, unit))
            if isinstance(ready, Outcome):
                outcomes[unit.key] = ready
            else:
                prepared.append(ready)
        if prepared:
            for p, outcome in zip(prepared, self._train_together(prepared), strict=True):
                outcomes[p.unit.key] = outcome
        return [outcomes[u.key] for u in units]

    def _train_together(self, prepared: Sequence[_Prepared]) -> list[Outcome]:
        assert self.device is not None
        method, first = prepared[0].method, prepared[0].ctx
        stacked = method.stack([p.model for p in prepared]) if len(prepared) > 1 else None
        data = [cast("SurvivalTargets", p.ctx.train) for p in prepared]
        why = (
            "one fold, or models that do not stack"
            if stacked is None
            else stack_refusal(data, self.bags, first.fit_settings, self.device)
        )
        keys = [p.unit.key for p in prepared]
        if why is not None or stacked is None:
            log.info("merge %s: folds trained one by one: %s", ", ".join(keys), why)
            return [self._guarded(p.unit, functools.partial(self._run_prepared, p)) for p in prepared]
        task = f"merge {first.target} {method.name} folds {', '.join(str(p.ctx.fold) for p in prepared)}"
        memos: list[BagMemo] = []  # each fold's per-bag constants of training, for its predictions
        with contextlib.ExitStack() as logs:  # the shared training in every fold's log
            for p in prepared:
                logs.enter_context(run_log(self._log(p.unit)))
            log.info("merge %s: %d folds trained together in each step", ", ".join(keys), len(keys))
            started = time.perf_counter()
            diverged: UnitsDiverged | None = None
            try:
                losses = fit_stacked(
                    stacked,
                    data,
                    self.bags,
                    first.fit_settings,
                    device=self.device,
                    progress=self.progress,
                    task=task,
                    memos=memos,
                )
            except UnitsDiverged as exc:
                diverged = exc
            else:
                stacked.unstack([p.model for p in prepared])
            seconds = time.perf_counter() - started
        if diverged is not None:  # a non-finite loss reaches the other folds: each fold alone
            names = ", ".join(keys[u] for u in diverged.units)
            log.warning(
                "merge %s: the training loss became non-finite in epoch %d; the folds train one by one",
                names,
                diverged.epoch,
            )
            return [self._guarded(p.unit, functools.partial(self._run_prepared, p)) for p in prepared]
        outcomes = []
        for p, unit_losses, memo in zip(prepared, losses, memos, strict=True):
            others = [k for k in keys if k != p.unit.key]
            finish = functools.partial(self._finish_stacked, p, unit_losses, seconds, others, memo)
            outcomes.append(self._guarded(p.unit, finish))
        return outcomes

    def _finish_stacked(
        self, prepared: _Prepared, losses: list[float], seconds: float, others: list[str], memo: BagMemo
    ) -> Outcome:
        with using_memo(memo):
            return _done(self._finish(prepared, losses, seconds, others))

    def _guarded(self, unit: MergeUnit, work: Callable[[], T]) -> T | Outcome:
        """``work()`` for ``unit``, inside its log; its failure where it raises a StephError or
        an OSError (the unit fails alone)."""
        with run_log(self._log(unit)):
            try:
                return work()
            except StephError as exc:
                log.error("merge %s failed: %s", unit.key, exc)
                return Outcome(Status.FAILED, str(exc), {"hint": exc.hint} if exc.hint else {})
            except OSError as exc:
                message = os_error_message(exc, f"merge {unit.key}")
                log.error("%s", message)
                return Outcome(Status.FAILED, message)

    def _log(self, unit: MergeUnit) -> Path:
        return self.layout.merged_log(unit.target, unit.run, unit.fold)

    def _run_prepared(self, prepared: _Prepared) -> Outcome:
        with bag_memo(len(prepared.train), ids=prepared.train):
            started = time.perf_counter()
            losses = prepared.method.train(prepared.model, prepared.ctx)
            return _done(self._finish(prepared, losses, time.perf_counter() - started))

    def _finish(
        self, prepared: _Prepared, losses: list[float], seconds: float, trained_with: Sequence[str] = ()
    ) -> MergeRecord:
        """Predict, write the unit's files and its record (last); inside the unit's bag memo."""
        config, layout, cohort, bags = self.config, self.layout, self.cohort, self.bags
        assert self.device is not None
        unit, method, ctx, model = prepared.unit, prepared.method, prepared.ctx, prepared.model
        target, run, fold = unit.target, unit.run, unit.fold
        cap, prec = config.train.max_bag_batch_patches, config.train.precision
        test_ids, train_ids = prepared.test, prepared.train
        test_hazards, extras = predict(
            model, test_ids, bags, device=self.device, max_batch_patches=cap, precision=prec
        )
        train_hazards, _ = predict(
            model, train_ids, bags, device=self.device, max_batch_patches=cap, precision=prec
        )
        merge_config = ctx.config
        files = {
            file: save_state_dict(
                layout.merged_file(target, run, fold, file), state, {"method": method.name, "run": run}
            )
            for file, state in method.state_files(model).items()
        }
        tables = method.tables(model, test_ids, extras, ctx)
        for file, (header, rows) in tables.items():
            write_csv(layout.merged_file(target, run, fold, file), header, rows)
        write_text(layout.merged_config(target, run, fold), dump_yaml(replace(config, merge=merge_config)))
        test = cohort.targets(test_ids, config.model)
        metrics = write_predictions(
            layout.predictions(target, run, fold),
            layout.result_metrics(target, run, fold),
            ids=test_ids,
            times=test.times,
            events=test.events,
            hazards=test_hazards,
            train_hazards=train_hazards,
            extra_metrics={"method": method.name, "run": run, "fold": fold},
        )
        signature = prepared.signature
        record = MergeRecord(
            **signature,
            run=run,
            target=target,
            fold=fold,
            label=unit.label or method.name,
            top_k=signature["options"].get("top_k"),
            gamma_selection=prepared.gamma_choice.to_dict() if prepared.gamma_choice else None,
            source_choice=unit.source_choice,
            vector_sha256=prepared.vector_hashes,
            dim_in=bags.dim,
            model_config=to_plain(config.model),
            merge_config=to_plain(merge_config),
            files=files,
            tables=sorted(tables),
            trainable_parameters=sum(t.numel() for t in model.parameters() if t.requires_grad),
            train_losses=losses,
            train_seconds=round(seconds, 3),
            device=str(self.device),
            n_train=len(train_ids),
            n_test=len(test_ids),
            c_index=metrics["c_index"],
            versions=versions(),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            trained_with=list(trained_with),
        )
        record.write(layout.merged_meta(target, run, fold))
        log.info("merge %s done: C-index %s in %.1f s", unit.key, _fmt(record.c_index), seconds)
        return record


@dataclass(frozen=True)
class _Prepared:
    """A unit ready to train: its method, context, untrained model and what its record needs."""

    unit: MergeUnit
    method: MergeMethod
    ctx: MergeContext
    model: nn.Module
    gamma_choice: GammaChoice | None
    signature: dict[str, Any]
    train: Sequence[str]
    test: Sequence[str]
    vector_hashes: dict[str, str]


def _done(record: MergeRecord) -> Outcome:
    return Outcome(Status.DONE, f"C-index {_fmt(record.c_index)}", {"c_index": record.c_index})


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"
