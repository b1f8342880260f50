"""Stage ``evaluate``: metrics, comparison, summary.csv and reports per target (:mod:`steph.pipeline.evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..progress import NULL_PROGRESS, Progress
from ..units import WorkUnit
from .base import Stage, unit_runner

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


def plan(project: Project, selection: EvaluateSelection) -> list[WorkUnit]:
    """One unit per target (default: every cancer of the project). Evaluation is always
    recomputed, so the units have no outputs and are never done."""
    from ..layout import normalize_cancer

    targets = selection.targets or project.cancers
    methods = list(selection.methods) if selection.methods else None
    return [
        WorkUnit(NAME, name, (), {"target": name, "methods": methods})
        for name in dict.fromkeys(normalize_cancer(t) for t in targets)
    ]


def run(
    project: Project,
    selection: EvaluateSelection,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    **options: Any,
) -> EvaluationReport:
    """Evaluate (``overwrite`` is ignored: evaluation always recomputes)."""
    from ..pipeline.evaluate import evaluate_models

    return evaluate_models(
        project.layout,
        project.config,
        targets=list(selection.targets) if selection.targets else None,
        methods=list(selection.methods) if selection.methods else None,
        progress=progress,
    )


def _unit_selection(unit: WorkUnit) -> EvaluateSelection:
    return EvaluateSelection([unit.params["target"]], unit.params["methods"])


def lock_roots(project: Project) -> list[Path]:
    return [project.layout.results_root, project.layout.reports_root]


STAGE: Stage[EvaluateSelection] = Stage(
    name=NAME,
    order=50,
    selection=EvaluateSelection,
    plan=plan,
    run=run,
    run_unit=unit_runner(run, _unit_selection),
    lock_roots=lock_roots,
    gpus=False,
)
