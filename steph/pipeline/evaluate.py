"""``stephctl evaluate``: survival metrics per fold, cross-fold comparison, summary.csv and reports.

Inputs are ``results/<TARGET>/<method>/fold_<k>/predictions.csv`` (+ metrics.json) written by
train-source (method ``cancer-specific``) and merge. A fold is taken only when its record exists
(:meth:`ProjectLayout.result_record`: the model's or the merge run's ``meta.json``, written
last). The stage's unit is a target (:func:`plan_targets`); its folds are run through the one
unit loop (:func:`~steph.units.run_units`). A fold asked for whose predictions lack their record
(a killed unit), or that has no predictions, fails (exit 2) with the command that finishes it;
the other folds are still evaluated, and summarised in the stage's finishing step.
Evaluation is cheap, seeded and always recomputed: every run replaces the rows of the (target,
method) pairs it evaluated in ``results/summary.csv`` (other rows are kept) and, unless
``evaluate.report`` is false, writes ``reports/<TARGET>/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..config import ProjectConfig
from ..config.project import project_cancers, project_folds
from ..errors import MissingArtifactError, StephError, UnknownNameError
from ..evaluation.fold import FoldResult, evaluate_fold, metric_names
from ..evaluation.inputs import (
    check_test_patients,
    cohort_labels,
    read_predictions,
    target_cohort,
    training_survival,
)
from ..evaluation.summary import Summary, summarize, write_summary
from ..evaluation.tables import Table, comparison_tables
from ..fileio import os_error_message
from ..layout import CANCER_SPECIFIC, ProjectLayout, normalize_cancer
from ..logs import run_log
from ..progress import NULL_PROGRESS, Progress
from ..report import StageReport, Status
from ..runs import resolve_run
from ..units import Outcome, WorkUnit, run_units

if TYPE_CHECKING:
    from ..data.cohort import Cohort

log = logging.getLogger(__name__)

STAGE = "evaluate"


@dataclass
class EvaluationReport(StageReport):
    """A :class:`StageReport` (one item per target/method/fold) plus the comparison itself."""

    summary: Summary | None = None
    tables: list[Table] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)
    """Target -> report.html path."""

    @property
    def warnings(self) -> list[str]:
        return self.summary.warnings if self.summary else []

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["tables"] = [t.to_dict() for t in self.tables]
        out["summary"] = self.summary.to_dict() if self.summary else None
        out["reports"] = self.reports
        return out


@dataclass(frozen=True)
class TargetUnit(WorkUnit):
    """The stage's unit: the evaluation of one target, of ``methods`` (default: every method
    with results for it). Its folds (:class:`FoldUnit`) are found on disk when it runs."""

    target: str = ""
    methods: list[str] | None = None


def plan_targets(
    layout: ProjectLayout,
    cancers: Sequence[str],
    *,
    targets: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> list[TargetUnit]:
    """The stage's plan: one :class:`TargetUnit` per target of ``targets``, by default per
    cancer of the project (``cancers``), then every other target with results (an
    ``evaluation_only`` merge target). Evaluation is always recomputed, so the units have no
    outputs and are never done.

    A Slurm array of evaluate is generated before any result exists, so the plan is the targets
    (stable), not their folds: which (method, fold)s a target has is read when the unit runs.
    """
    chosen = [normalize_cancer(t) for t in targets] if targets else [*cancers, *layout.result_targets()]
    wanted = list(dict.fromkeys(methods)) if methods else None
    return [TargetUnit(STAGE, name, (), target=name, methods=wanted) for name in dict.fromkeys(chosen)]


@dataclass(frozen=True)
class FoldUnit(WorkUnit):
    """One (target, method, fold) a :class:`TargetUnit` evaluates: its ``predictions`` and
    ``record`` files, and its ``state``: ``finished`` (both exist), ``unfinished`` (predictions
    without a record: its stage was interrupted) or ``missing`` (no predictions)."""

    target: str = ""
    method: str = ""
    fold: int = 0
    predictions: Path = Path()
    record: Path = Path()
    state: str = "missing"

    @property
    def finished(self) -> bool:
        return self.state == "finished"


def _fold(layout: ProjectLayout, target: str, method: str, fold: int) -> FoldUnit:
    path = layout.predictions(target, method, fold)
    record = layout.result_record(target, method, fold)
    state = "missing" if not path.is_file() else "finished" if record.is_file() else "unfinished"
    return FoldUnit(
        STAGE,
        f"{target}/{method}/fold_{fold}",
        (),
        target=target,
        method=method,
        fold=fold,
        predictions=path,
        record=record,
        state=state,
    )


def _folds(
    layout: ProjectLayout, config: ProjectConfig, units: Sequence[TargetUnit], *, named: bool
) -> list[FoldUnit]:
    """The folds ``units`` evaluate, each ``finished``, ``unfinished`` or ``missing``.

    Asked for are, per target, the folds the project trains (``train.folds``, else those of its
    splits; else every fold with results there; ``merge.folds`` for merge runs when set) of each
    method of the unit, or by default of each method with results for that target (a method
    never run for a target is not asked for unless named). A target without results is left
    out unless ``named`` (a ``--target``, a task index).

    Raises:
        MissingArtifactError: there are no results at all.
        UnknownNameError: a named target, or a named method, has no results.
    """
    available = layout.result_targets()
    if not available:
        raise MissingArtifactError(
            f"no results under {layout.results_root}",
            hint="run `stephctl train-source` (cancer-specific models) and/or `stephctl merge` first",
        )
    unknown = [u.target for u in units if u.target not in available]
    if named and unknown:
        raise UnknownNameError(
            f"no results for target(s) {', '.join(unknown)} under {layout.results_root}",
            hint=f"targets with results: {', '.join(available)}",
        )
    folds: list[FoldUnit] = []
    named_methods: set[str] = set()
    found_methods: set[str] = set()
    for unit in units:
        if unit.target not in available:
            continue
        target, methods = unit.target, unit.methods
        named_methods.update(methods or [])
        present = layout.result_methods(target)
        found_methods.update(present)
        wanted = (  # `-m steph` -> the target's one steph run, e.g. steph-top2
            [resolve_run(layout, target, m, config=config, strict=False) for m in dict.fromkeys(methods)]
            if methods
            else present
        )
        found_methods.update(
            m for m, run in zip(dict.fromkeys(methods or []), wanted, strict=False) if run in present
        )
        trained = project_folds(layout, config, target) or sorted(
            {k for m in present for k in layout.result_folds(target, m)}
        )
        for method in wanted:
            chosen = trained if method == CANCER_SPECIFIC else (config.merge.folds or trained)
            for fold in sorted({*chosen, *layout.result_folds(target, method)}):
                folds.append(_fold(layout, target, method, fold))
    missing = sorted(named_methods - found_methods)
    if missing:
        raise UnknownNameError(
            f"no results for method(s) {', '.join(missing)}",
            hint=f"methods with results: {', '.join(sorted(found_methods)) or 'none'}",
        )
    return folds


def upstream_command(target: str, method: str, fold: int) -> str:
    """The command that finishes the unit a result comes from.

    >>> upstream_command("BRCA", "steph", 2)
    '`stephctl merge --target BRCA --method steph --fold 2`'
    >>> upstream_command("BRCA", "cancer-specific", 0)
    '`stephctl train-source --cancer BRCA --fold 0`'
    >>> upstream_command("BRCA", "steph-top2", 1)
    '`stephctl merge --target BRCA --fold 1` with the method and options that made run steph-top2'
    """
    from ..merging import MERGE_METHODS

    if method == CANCER_SPECIFIC:
        return f"`stephctl train-source --cancer {target} --fold {fold}`"
    if method in MERGE_METHODS:
        return f"`stephctl merge --target {target} --method {method} --fold {fold}`"
    return (
        f"`stephctl merge --target {target} --fold {fold}` with the method and options that made run {method}"
    )


def _not_done_message(unit: FoldUnit) -> str:
    if unit.state == "unfinished":
        what = f"not finished: {unit.predictions} has no record {unit.record} (its stage was interrupted)"
    else:
        what = f"not run: no predictions {unit.predictions}"
    return f"{what} (hint: run {upstream_command(unit.target, unit.method, unit.fold)}, then evaluate again)"


def evaluate_models(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    targets: list[str] | None = None,
    methods: list[str] | None = None,
    bootstrap: int | None = None,
    progress: Progress = NULL_PROGRESS,
) -> EvaluationReport:
    """Evaluate ``targets`` (default: every target with results): the stage ``evaluate`` on
    :func:`plan_targets` (:func:`evaluate_targets`).

    Args:
        layout: the project.
        config: its configuration (``evaluate`` section: resamples, seed, confidence, AUC
            horizons, reference method, report switch; ``model.time_bins``/``bin_width_days``).
        targets: restrict to these targets (default: every target with results).
        methods: restrict to these methods (default: every method folder).
        bootstrap: resamples per fold, overriding ``evaluate.bootstrap`` (0 = no intervals).
        progress: receives one step per fold.
    """
    units = plan_targets(layout, project_cancers(layout, config), targets=targets, methods=methods)
    return evaluate_targets(
        layout, config, units, named=bool(targets), bootstrap=bootstrap, progress=progress
    )


def evaluate_targets(
    layout: ProjectLayout,
    config: ProjectConfig,
    units: Sequence[TargetUnit],
    *,
    named: bool = True,
    bootstrap: int | None = None,
    progress: Progress = NULL_PROGRESS,
) -> EvaluationReport:
    """Evaluate every fold of ``units`` (:func:`~steph.units.run_units`, one item per fold: a
    fold without its record or its predictions fails with the command that finishes it), then,
    as the stage's finishing step over all of them, write results/summary.csv and (unless
    disabled) the reports.

    Args:
        units: Units of :func:`plan_targets`.
        named: The targets were asked for (``--target``, a task index): one without results is
            an error instead of being left out.
        bootstrap: Resamples per fold, overriding ``evaluate.bootstrap`` (0 = no intervals).

    Returns:
        The report: an item per fold (failed items name the bad file), the summary, the
        comparison tables and the report paths.

    Raises:
        MissingArtifactError: there are no results at all.
        UnknownNameError: a named target, or a named method, has no results.
    """
    settings = config.evaluate
    resamples = settings.bootstrap if bootstrap is None else int(bootstrap)
    folds = _folds(layout, config, units, named=named)
    worker = EvaluateWorker(layout, config, resamples)
    report = EvaluationReport(STAGE)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with run_log(layout.stage_log(STAGE, stamp)):
        report.items = run_units(STAGE, folds, worker, progress=progress, unit_name="folds").items
        if not worker.results:
            return report
        expected = {
            t: project_folds(layout, config, t) for t in {r.predictions.target for r in worker.results}
        }
        summary = summarize(
            worker.results,
            metrics=metric_names(settings.auc_years),
            reference=settings.reference_method,
            confidence=settings.confidence,
            expected_folds=expected,
        )
        for warning in summary.warnings:
            log.info("note: %s", warning)
        report.summary = summary
        report.tables = comparison_tables(summary, resamples=resamples)
        try:
            report.outputs["summary_csv"] = str(write_summary(layout.summary, summary))
        except OSError as exc:
            message = os_error_message(exc, str(layout.summary))
            log.error("%s", message)
            report.add(layout.summary.name, Status.FAILED, message)
        if settings.report:
            _write_reports(layout, summary, report, resamples)
    return report


class EvaluateWorker:
    """Evaluates one fold (its metrics with bootstrap intervals); each target's cohort is read
    once, for all its folds. The fold results are kept for the summary."""

    def __init__(self, layout: ProjectLayout, config: ProjectConfig, resamples: int) -> None:
        self.layout, self.config, self.resamples = layout, config, resamples
        self.cohorts: dict[str, Cohort | None] = {}
        self.results: list[FoldResult] = []

    def refuse(self, unit: FoldUnit) -> str | None:
        return None if unit.finished else _not_done_message(unit)

    def skipped(self, unit: FoldUnit, *, by_other: bool) -> Outcome:  # pragma: no cover - never done
        return Outcome(Status.SKIPPED, "evaluated by another process" if by_other else "already evaluated")

    def lock(self, unit: FoldUnit) -> None:
        """None: a fold is only read (the summary and reports are written after every fold)."""
        return None

    def run(self, unit: FoldUnit) -> Outcome:
        layout, config, settings = self.layout, self.config, self.config.evaluate
        target, method, fold = unit.target, unit.method, unit.fold
        if target not in self.cohorts:
            self.cohorts[target] = target_cohort(layout, config, target)
        cohort = self.cohorts[target]
        preds = read_predictions(
            unit.predictions,
            target=target,
            method=method,
            fold=fold,
            time_bins=config.model.time_bins,
            labels=cohort_labels(cohort),
        )
        check_test_patients(layout, cohort, fold, preds)
        result = evaluate_fold(
            preds,
            training_survival(layout, cohort, fold, preds),
            auc_years=settings.auc_years,
            bin_width=config.model.bin_width_days,
            resamples=self.resamples,
            confidence=settings.confidence,
            seed=settings.seed,
        )
        self.results.append(result)
        return Outcome(Status.DONE, _headline(result), {"n": result.n, "events": result.events})


def _headline(result: FoldResult) -> str:
    c = result.metrics["c_index"]
    if not c.defined:
        return f"n={result.n}, C-index undefined: {c.reason}"
    interval = "" if c.replicates.size == 0 else f" [{c.ci_low:.3f}, {c.ci_high:.3f}]"
    return f"n={result.n}, events={result.events}, C-index {c.value:.4f}{interval}"


def _write_reports(layout: ProjectLayout, summary: Summary, report: EvaluationReport, resamples: int) -> None:
    from ..evaluation.html_report import write_target_report

    versions = f"stephctl {__version__}; bootstrap {resamples} resamples"
    for table in report.tables:
        target = table.title
        if target not in summary.per_target:
            continue
        try:
            written = write_target_report(layout, target, summary, table, versions=versions)
        except StephError as exc:
            log.error("report %s: %s", target, exc)
            report.add(f"{target}/report", Status.FAILED, str(exc))
            continue
        except OSError as exc:
            message = os_error_message(exc, f"{target}/report")
            log.error("%s", message)
            report.add(f"{target}/report", Status.FAILED, message)
            continue
        report.reports[target] = str(written.html)
