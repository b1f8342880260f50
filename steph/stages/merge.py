"""Stage ``merge``: STEPH and the baselines for one target, per (method, fold) (:mod:`steph.pipeline.merge`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..progress import NULL_PROGRESS, Progress
from .base import Stage, Survey

if TYPE_CHECKING:
    from pathlib import Path

    from ..config.project import Project
    from ..layout import ProjectLayout
    from ..pipeline.plans import MergeUnit
    from ..report import StageReport

NAME = "merge"


@dataclass(frozen=True)
class MergeSelection:
    """What to merge.

    Attributes:
        target: Target cancer (required).
        methods: Merge methods (default ``merge.method``).
        folds: Target folds (default: ``merge.folds``, else the folds the project trains).
        paper: Run the paper's comparison set instead of ``methods``.
    """

    target: str | None = None
    methods: list[str] | None = None
    folds: list[int] | None = None
    paper: bool = False


def _target(selection: MergeSelection) -> str:
    if not selection.target:
        raise ConfigError("merge tasks need a target", hint="pass --target, e.g. --target BRCA")
    return selection.target


def plan(project: Project, selection: MergeSelection) -> list[MergeUnit]:
    """Target x method x fold, the folds from ``--fold``, ``merge.folds`` or the folds the project
    trains (not from the target's task vectors, which may not exist yet;
    :func:`~steph.pipeline.plans.plan_merge`)."""
    from ..pipeline.plans import plan_merge

    folds = [int(k) for k in selection.folds] if selection.folds else None
    return plan_merge(
        project.layout,
        project.config,
        target=_target(selection),
        methods=selection.methods,
        folds=folds,
        paper=selection.paper,
    )


def run_units(
    project: Project,
    units: Sequence[MergeUnit],
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    named: bool = True,
    devices: Sequence[str] = (),
) -> StageReport:
    """Train ``units`` (one target's); with ``named``, every target fold needs its task vector,
    else a fold without one fails alone."""
    from ..pipeline.merge import run_merges

    return run_merges(
        project.layout, project.config, units, named=named, overwrite=overwrite, progress=progress
    )


def _named(project: Project, selection: MergeSelection) -> bool:
    return bool(selection.folds or project.config.merge.folds)


def lock_roots(project: Project) -> list[Path]:
    return [project.layout.merged_root, project.layout.results_root]


def survey(project: Project) -> Survey:
    """Per target: the folds of ``merge.method`` and of every other run found under ``merged/``
    or ``results/`` (runs made with CLI flags: other methods, options)."""
    from ..errors import StephError
    from ..layout import CANCER_SPECIFIC
    from ..units import WorkUnit

    layout = project.layout
    row = Survey(NAME)
    for target in project.targets:
        planned: list[MergeUnit] = []
        try:
            planned = plan(project, MergeSelection(target=target))
        except StephError as exc:
            row.errors.append(f"{target}: {exc.message}")
        row.units.extend((target, unit) for unit in planned)
        runs = {u.run for u in planned}
        found = set(layout.result_methods(target)) | set(_merged_runs(layout, target))
        folds = layout.split_folds(target)
        for run in sorted(found - runs - {CANCER_SPECIFIC}):
            row.units.extend(
                (target, WorkUnit(NAME, f"{target}/{run}/fold_{k}", (layout.result_record(target, run, k),)))
                for k in folds
            )
    return row


def _merged_runs(layout: ProjectLayout, target: str) -> list[str]:
    base = layout.merged_root / target
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


STAGE: Stage[MergeSelection, MergeUnit] = Stage(
    name=NAME,
    order=40,
    selection=MergeSelection,
    plan=plan,
    run_units=run_units,
    lock_roots=lock_roots,
    named=_named,
    survey=survey,
)
