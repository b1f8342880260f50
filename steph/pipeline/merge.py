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

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..bundles.signing import check_trusted_sources
from ..checkpoints import save_state_dict
from ..config import dump_yaml, to_plain
from ..config.merge import MergeConfig
from ..config.project import merge_epochs, project_folds
from ..data import load_cohort, load_split, open_bags
from ..errors import ConfigError, LockedError, StephError
from ..faults import point
from ..fileio import os_error_message, write_csv, write_text
from ..locks import hold
from ..logs import run_log
from ..merging import MERGE_METHODS, MergeContext
from ..merging.autotune import check_search, tune
from ..merging.inputs import (
    check_task_vectors,
    for_method,
    load_inputs,
    requested_methods,
    require_task_vectors,
    resolve_sources,
    resolve_target,
    target_folds,
)
from ..merging.paper import PAPER_VARIANTS, Variant
from ..predictions import write_predictions
from ..progress import NULL_PROGRESS, Progress
from ..records import MERGE_SIGNATURE, MergeRecord
from ..report import StageReport, Status
from ..runtime import resolve_device, seed_everything, set_deterministic
from ..theta0 import Theta0, check_architecture, load_theta0, versions
from ..training.loop import predict
from ..transfer.choose import choose_sources, parse_auto
from ..units import WorkUnit
from ._source_model import fit_settings
from .train_source import too_few_for_a_batch

if TYPE_CHECKING:
    import torch

    from ..config import ProjectConfig
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)

STAGE = "merge"


def plan_merge(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    target: str,
    methods: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
    paper: bool = False,
    runs: Sequence[str] | None = None,
) -> list[WorkUnit]:
    """One unit per (target fold, method variant), fold-major. ``paper`` runs the paper's
    comparison set (:data:`steph.merging.paper.PAPER_VARIANTS`) instead of ``methods``;
    ``runs`` keeps only the variants with those folder names (one task of a task array).

    Raises:
        ConfigError, UnknownNameError, MissingArtifactError: as :func:`merge_models`'s checks.
    """
    name = resolve_target(layout, config, target)
    return _plan(
        layout, config, name, resolve_sources(layout, config, name), methods, folds, paper=paper, runs=runs
    )


def _plan(
    layout: ProjectLayout,
    config: ProjectConfig,
    name: str,
    sources: list[str],
    methods: Sequence[str] | None,
    folds: Sequence[int] | None,
    *,
    paper: bool = False,
    runs: Sequence[str] | None = None,
) -> list[WorkUnit]:
    """:func:`plan_merge` for a resolved target and its sources."""
    if paper:
        if methods:
            raise ConfigError("--paper runs the paper's own set of methods", hint="drop --method or --paper")
        requested_methods(config, list(dict.fromkeys(v.method for v in PAPER_VARIANTS)))
        variants = list(PAPER_VARIANTS)
    else:
        variants = [Variant(m.name, m.name) for m in requested_methods(config, methods)]
    check_search(config.merge)
    fold_list = target_folds(layout, name, folds or config.merge.folds)  # missing inputs first
    auto = parse_auto(config.merge.sources)  # --sources auto:K: chosen per fold (steph.transfer.choose)
    planned: dict[str, Variant] = {}
    for variant in variants:
        method = MERGE_METHODS.get(variant.method)
        merge = for_method(variant.apply(config.merge), method)
        method.check(merge, auto or len(sources))
        planned.setdefault(method.run_name(merge) + (f"-auto{auto}" if auto else ""), variant)
    if runs is not None:
        planned = {run: v for run, v in planned.items() if run in runs}
    units = []
    for fold in fold_list:
        choice = choose_sources(layout, name, fold, sources, auto) if auto else None
        for run, variant in planned.items():
            params = {
                "target": name,
                "method": variant.method,
                "label": variant.label,
                "overrides": variant.overrides,
                "run": run,
                "fold": fold,
                "sources": choice.sources if choice else sources,
                "source_fold": config.merge.source_fold,
                "paper": paper,
                "source_choice": choice.to_json() if choice else None,
            }
            outputs = (layout.merged_meta(name, run, fold),)
            units.append(WorkUnit(STAGE, f"{name}/{run}/fold_{fold}", outputs, params))
    return units


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
    """Train and evaluate every planned (method, fold) of ``target``; skip finished ones.
    ``paper``: the paper's comparison set (:func:`plan_merge`).

    Raises (before any training):
        ConfigError: unknown target or source, bad option, fewer sources than top-k.
        UnknownNameError: unknown method.
        MissingArtifactError: task vectors, theta0, labels, splits or features missing.
        ConsistencyError: task vectors from another theta0 or architecture; features whose
            dimension differs from theta0's.
    """
    name = resolve_target(layout, config, target)
    sources, source_fold = resolve_sources(layout, config, name), config.merge.source_fold
    check_trusted_sources(
        layout, config, sources, source_fold
    )  # imported ones: signed, when a trust list is set
    units = _plan(layout, config, name, sources, methods, folds, paper=paper, runs=runs)
    no_vector: set[int] = set()
    if not (folds or config.merge.folds):  # every fold the project trains: one without a vector fails
        listed = {u.params["fold"] for u in units}
        extra = [k for k in project_folds(layout, config, name) if k not in listed]
        if extra:
            units += _plan(layout, config, name, sources, methods, extra)
            units.sort(key=lambda u: u.params["fold"])
            no_vector = set(extra)
    needed = [(name, u.params["fold"]) for u in units if u.params["fold"] not in no_vector]
    needed += [(s, source_fold) for s in dict.fromkeys(s for u in units for s in u.params["sources"])]
    require_task_vectors(layout, needed)
    theta0 = load_theta0(layout, model=config.model)
    check_task_vectors(layout, needed, theta0)
    todo = [u for u in units if (overwrite or not u.done) and u.params["fold"] not in no_vector]
    set_deterministic(True)
    report = StageReport(STAGE)
    runner = _Runner(layout, config, theta0, name, progress) if todo else None
    progress.start("merge", len(units), unit="runs")
    try:
        for unit in units:
            if unit.params["fold"] in no_vector:
                report.add(
                    unit.key,
                    Status.FAILED,
                    f"no task vector for the target fold ({layout.task_vector_meta(name, unit.params['fold'])}; "
                    f"hint: `stephctl -p {layout.root} task-vector --cancer {name} --fold {unit.params['fold']}`)",
                )
            elif unit in todo and runner is not None:
                runner.run(unit, report, overwrite)
            else:
                _skip(layout, config, unit, theta0, report)
            progress.advance("merge", 1, item=unit.key)
    finally:
        progress.finish("merge")
    report.outputs["merged"] = [
        str(layout.merged_dir(name, u.params["run"], u.params["fold"])) for u in units
    ]
    report.outputs["results"] = [
        str(layout.results_dir(name, u.params["run"], u.params["fold"])) for u in units
    ]
    return report


def _unit_merge(config: ProjectConfig, unit: WorkUnit) -> MergeConfig:
    """The ``merge:`` settings of one unit: its variant's overrides, only its method's options."""
    method = MERGE_METHODS.get(unit.params["method"])
    variant = Variant(unit.params.get("label", method.name), method.name, unit.params.get("overrides", {}))
    return for_method(variant.apply(config.merge), method)


def _signature(config: ProjectConfig, unit: WorkUnit, theta0: Theta0) -> dict[str, Any]:
    method = MERGE_METHODS.get(unit.params["method"])
    return {
        "method": method.name,
        "options": method.options(_unit_merge(config, unit)),
        "sources": list(unit.params["sources"]),
        "source_fold": unit.params["source_fold"],
        "epochs": merge_epochs(config),
        "seed": config.train.seed,
        "theta0_sha256": theta0.sha256,
    }


def _skip(
    layout: ProjectLayout,
    config: ProjectConfig,
    unit: WorkUnit,
    theta0: Theta0,
    report: StageReport,
    why: str = "exists",
) -> None:
    record = MergeRecord.read(unit.outputs[0])
    there, wanted = record.signature(), _signature(config, unit, theta0)
    differs = [k for k in MERGE_SIGNATURE if there[k] != wanted[k]]
    if differs:
        detail = "; ".join(f"{k}: {there[k]!r} there, {wanted[k]!r} now" for k in differs)
        report.add(
            unit.key,
            Status.FAILED,
            f"exists with other settings ({detail}); rerun with --overwrite to replace it",
        )
        return
    report.add(unit.key, Status.SKIPPED, f"{why} (C-index {record.c_index}); --overwrite to redo")


class _Runner:
    """Runs the units of one target; the cohort and the bags of every patient in its splits are
    read (and checked against theta0) once, on construction, so bad inputs fail before training."""

    def __init__(
        self, layout: ProjectLayout, config: ProjectConfig, theta0: Theta0, target: str, progress: Progress
    ) -> None:
        self.layout, self.config, self.theta0, self.progress = layout, config, theta0, progress
        self.device: torch.device = resolve_device(config.train.device)
        self.cohort = load_cohort(layout, config, target)
        ids: dict[str, None] = {}
        for fold in layout.split_folds(target):
            split = load_split(layout, self.cohort, fold)
            ids.update(dict.fromkeys((*split.train, *split.test)))
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

    def run(self, unit: WorkUnit, report: StageReport, overwrite: bool = False) -> None:
        p = unit.params
        meta_path = unit.outputs[0]
        why = self._too_few(unit)
        if why is not None:
            log.error("%s", why)
            report.add(unit.key, Status.FAILED, why)
            return
        try:
            temps = [self.layout.results_dir(p["target"], p["run"], p["fold"])]
            with hold(meta_path, what=f"merge {unit.key}", stage=STAGE, temp_dirs=temps):
                if unit.done and not overwrite:  # another process finished it meanwhile
                    _skip(self.layout, self.config, unit, self.theta0, report, "done by another process")
                    return
                meta_path.unlink(missing_ok=True)
                point(f"{STAGE}:locked")
                with run_log(self.layout.merged_log(p["target"], p["run"], p["fold"])):
                    record = self._train(unit)
        except LockedError as exc:
            report.add(unit.key, Status.LOCKED, str(exc))
            return
        except StephError as exc:
            log.error("merge %s failed: %s", unit.key, exc)
            report.add(unit.key, Status.FAILED, str(exc))
            return
        except OSError as exc:
            message = os_error_message(exc, f"merge {unit.key}")
            log.error("%s", message)
            report.add(unit.key, Status.FAILED, message)
            return
        report.add(unit.key, Status.DONE, f"C-index {_fmt(record.c_index)}", c_index=record.c_index)

    def _too_few(self, unit: WorkUnit) -> str | None:
        """The target fold cannot train (fewer training patients than one batch), or None."""
        if not merge_epochs(self.config):
            return None
        split = load_split(self.layout, self.cohort, unit.params["fold"])
        return too_few_for_a_batch(len(split.train), self.config.train.batch_size, f"merge {unit.key}", STAGE)

    def _train(self, unit: WorkUnit) -> MergeRecord:
        p, config, layout, cohort, bags = unit.params, self.config, self.layout, self.cohort, self.bags
        target, run, fold = p["target"], p["run"], p["fold"]
        method = MERGE_METHODS.get(p["method"])
        merge_config = replace(
            _unit_merge(config, unit), method=method.name, sources=list(p["sources"]), folds=[fold]
        )
        split = load_split(layout, cohort, fold)
        inputs = load_inputs(layout, target, fold, p["sources"], p["source_fold"], self.theta0)
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
        )
        log.info(
            "merge %s: %d sources (%s), %d train / %d test patients, %d epochs on %s",
            unit.key,
            len(p["sources"]),
            ", ".join(p["sources"]),
            len(split.train),
            len(split.test),
            settings.epochs,
            self.device,
        )
        cap = config.train.max_bag_batch_patches
        ctx, gamma_choice = tune(method, ctx, max_batch_patches=cap)  # settings set to auto
        merge_config = ctx.config
        seed_everything(config.train.seed)
        model = method.build(ctx)
        started = time.perf_counter()
        losses = method.train(model, ctx)
        seconds = time.perf_counter() - started
        prec = config.train.precision
        test_hazards, extras = predict(
            model, split.test, bags, device=self.device, max_batch_patches=cap, precision=prec
        )
        train_hazards, _ = predict(
            model, split.train, bags, device=self.device, max_batch_patches=cap, precision=prec
        )
        files = {
            file: save_state_dict(
                layout.merged_file(target, run, fold, file), state, {"method": method.name, "run": run}
            )
            for file, state in method.state_files(model).items()
        }
        tables = method.tables(model, split.test, extras, ctx)
        for file, (header, rows) in tables.items():
            write_csv(layout.merged_file(target, run, fold, file), header, rows)
        write_text(layout.merged_config(target, run, fold), dump_yaml(replace(config, merge=merge_config)))
        test = cohort.targets(split.test, config.model)
        metrics = write_predictions(
            layout.predictions(target, run, fold),
            layout.result_metrics(target, run, fold),
            ids=split.test,
            times=test.times,
            events=test.events,
            hazards=test_hazards,
            train_hazards=train_hazards,
            extra_metrics={"method": method.name, "run": run, "fold": fold},
        )
        record = MergeRecord(
            **signature,
            run=run,
            target=target,
            fold=fold,
            label=p.get("label", method.name),
            top_k=signature["options"].get("top_k"),
            gamma_selection=gamma_choice.to_dict() if gamma_choice else None,
            source_choice=p.get("source_choice"),
            vector_sha256=inputs.vector_hashes,
            dim_in=bags.dim,
            model_config=to_plain(config.model),
            merge_config=to_plain(merge_config),
            files=files,
            tables=sorted(tables),
            trainable_parameters=sum(t.numel() for t in model.parameters() if t.requires_grad),
            train_losses=losses,
            train_seconds=round(seconds, 3),
            device=str(self.device),
            n_train=len(split.train),
            n_test=len(split.test),
            c_index=metrics["c_index"],
            versions=versions(),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        record.write(layout.merged_meta(target, run, fold))
        log.info("merge %s done: C-index %s in %.1f s", unit.key, _fmt(record.c_index), seconds)
        return record


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"
