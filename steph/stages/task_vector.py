"""Stage ``task-vector``: tau = theta - theta0 per (cancer, fold) (:mod:`steph.pipeline.task_vector`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..progress import NULL_PROGRESS, Progress
from ..units import WorkUnit
from .base import Stage, unit_runner
from .train_source import TrainSourceSelection
from .train_source import plan as plan_models

if TYPE_CHECKING:
    from pathlib import Path

    from ..config.project import Project
    from ..report import StageReport

NAME = "task-vector"


@dataclass(frozen=True)
class TaskVectorSelection:
    """Which task vectors to compute.

    Attributes:
        cancers: Cancers (default: the project's cancers).
        folds: Folds (default: every fold the project trains, and every trained fold).
    """

    cancers: list[str] | None = None
    folds: list[int] | None = None


def plan(project: Project, selection: TaskVectorSelection) -> list[WorkUnit]:
    """One unit per model that train-source is asked to train (not per model already trained),
    so that an array can be generated before any model exists."""
    units = []
    for model in plan_models(project, TrainSourceSelection(selection.cancers, selection.folds)):
        cancer, fold = model.params["cancer"], model.params["fold"]
        outputs = (project.layout.task_vector(cancer, fold), project.layout.task_vector_meta(cancer, fold))
        units.append(WorkUnit(NAME, model.key, outputs, {"cancer": cancer, "fold": fold}))
    return units


def run(
    project: Project,
    selection: TaskVectorSelection,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    **options: Any,
) -> StageReport:
    from ..pipeline.task_vector import compute_task_vectors

    return compute_task_vectors(
        project.layout,
        project.config,
        cancers=selection.cancers,
        folds=selection.folds,
        overwrite=overwrite,
        progress=progress,
    )


def _unit_selection(unit: WorkUnit) -> TaskVectorSelection:
    return TaskVectorSelection([unit.params["cancer"]], [unit.params["fold"]])


def lock_roots(project: Project) -> list[Path]:
    return [project.layout.task_vectors_root]


STAGE: Stage[TaskVectorSelection] = Stage(
    name=NAME,
    order=30,
    selection=TaskVectorSelection,
    plan=plan,
    run=run,
    run_unit=unit_runner(run, _unit_selection),
    lock_roots=lock_roots,
    gpus=False,
)
