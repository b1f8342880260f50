"""Stage ``evaluate``: metrics, comparison, summary.csv and reports per target (:mod:`steph.pipeline.evaluate`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..progress import NULL_PROGRESS, Progress
from ..units import WorkUnit
from .base import Stage

if TYPE_CHECKING:
    from pathlib import Path

    from ..config.project import Project
    from ..pipeline.evaluate import EvaluationReport

NAME = "evaluate"


@dataclass(frozen=True)
class EvaluateSelection:
    """What to evaluate.

    Attributes:
        targets: Targets (default: every target with results; for a task list, every cancer).
        methods: Method folders (default: every method with results).
    """

    targets: list[str] | None = None
    methods: list[str] | None = None


@dataclass(frozen=True)
class TargetUnit(WorkUnit):
    """Evaluation of one target (of ``methods``, default: every method with results)."""

    target: str = ""
    methods: list[str] | None = None


def plan(project: Project, selection: EvaluateSelection) -> list[TargetUnit]:
    """One unit per target (default: every cancer of the project). Evaluation is always
    recomputed, so the units have no outputs and are never done."""
    from ..layout import normalize_cancer

    targets = selection.targets or project.cancers
    methods = list(selection.methods) if selection.methods else None
    return [
        TargetUnit(NAME, name, (), target=name, methods=methods)
        for name in dict.fromkeys(normalize_cancer(t) for t in targets)
    ]


def run(
    project: Project,
    selection: EvaluateSelection,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    devices: Sequence[str] = (),
) -> EvaluationReport:
    """Evaluate every target with results (or ``selection.targets``), summarised together;
    evaluation always recomputes, so nothing is ever skipped."""
    from ..pipeline.evaluate import evaluate_models

    return evaluate_models(
        project.layout,
        project.config,
        targets=list(selection.targets) if selection.targets else None,
        methods=list(selection.methods) if selection.methods else None,
        progress=progress,
    )


def run_units(
    project: Project,
    units: Sequence[TargetUnit],
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    named: bool = True,
    devices: Sequence[str] = (),
) -> EvaluationReport:
    """Evaluate the targets of ``units`` together (always recomputed)."""
    methods = list(dict.fromkeys(m for u in units for m in u.methods or [])) or None
    selection = EvaluateSelection([u.target for u in units], methods)
    return run(project, selection, overwrite=overwrite, progress=progress)


def lock_roots(project: Project) -> list[Path]:
    return [project.layout.results_root, project.layout.reports_root]


STAGE: Stage[EvaluateSelection, TargetUnit] = Stage(
    name=NAME,
    order=50,
    selection=EvaluateSelection,
    plan=plan,
    run_units=run_units,
    lock_roots=lock_roots,
    gpus=False,
    run_selection=run,
    in_status=False,
)
