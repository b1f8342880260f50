"""Stage ``merge``: STEPH and the baselines for one target, per (method, fold) (:mod:`steph.pipeline.merge`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..progress import NULL_PROGRESS, Progress
from .base import Stage, unit_runner

if TYPE_CHECKING:
    from pathlib import Path

    from ..config.project import Project
    from ..report import StageReport
    from ..units import WorkUnit

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


def plan(project: Project, selection: MergeSelection) -> list[WorkUnit]:
    """Target x method x fold, the folds from :meth:`Project.merge_folds` (not from the target's
    task vectors, which may not exist yet)."""
    from ..layout import normalize_cancer
    from ..pipeline.merge import plan_merge

    target = _target(selection)
    folds = [int(k) for k in selection.folds or project.merge_folds(normalize_cancer(target))]
    return plan_merge(
        project.layout,
        project.config,
        target=target,
        methods=selection.methods,
        folds=folds,
        paper=selection.paper,
    )


def run(
    project: Project,
    selection: MergeSelection,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    runs: list[str] | None = None,
    **options: Any,
) -> StageReport:
    """Every (method, fold) of the selection; ``runs`` keeps only those run folders."""
    from ..pipeline.merge import merge_models

    return merge_models(
        project.layout,
        project.config,
        target=_target(selection),
        methods=selection.methods,
        folds=selection.folds,
        paper=selection.paper,
        runs=runs,
        overwrite=overwrite,
        progress=progress,
    )


def _unit_selection(unit: WorkUnit) -> MergeSelection:
    p = unit.params
    paper = bool(p.get("paper"))
    return MergeSelection(p["target"], None if paper else [p["method"]], [p["fold"]], paper)


def _unit_options(unit: WorkUnit) -> dict[str, Any]:
    """Only the unit's run folder (a method's settings can give several)."""
    return {"runs": [unit.params["run"]]}


def lock_roots(project: Project) -> list[Path]:
    return [project.layout.merged_root, project.layout.results_root]


STAGE: Stage[MergeSelection] = Stage(
    name=NAME,
    order=40,
    selection=MergeSelection,
    plan=plan,
    run=run,
    run_unit=unit_runner(run, _unit_selection, _unit_options),
    lock_roots=lock_roots,
)
