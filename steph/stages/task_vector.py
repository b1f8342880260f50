"""Stage ``task-vector``: tau = theta - theta0 per (cancer, fold) (:mod:`steph.pipeline.task_vector`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..progress import NULL_PROGRESS, Progress
from ..units import ModelUnit
from .base import Stage

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


def plan(project: Project, selection: TaskVectorSelection) -> list[ModelUnit]:
    """One unit per model that train-source is asked to train (not per model already trained),
    so that an array can be generated before any model exists
    (:func:`~steph.pipeline.plans.plan_task_vectors`)."""
    from ..pipeline.plans import plan_task_vectors

    folds = [int(k) for k in selection.folds] if selection.folds else None
    return plan_task_vectors(project.layout, project.config, cancers=selection.cancers, folds=folds)


def run_units(
    project: Project,
    units: Sequence[ModelUnit],
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    named: bool = True,
    devices: Sequence[str] = (),
) -> StageReport:
    """Write the task vectors of ``units``; with ``named``, a unit without a trained model stops
    the run (exit 1, listing them all), else it fails alone."""
    from ..pipeline.task_vector import TaskVectorWorker, finish_report
    from ..units import run_units as loop

    layout = project.layout
    worker = TaskVectorWorker.prepare(layout, project.config, units, named=named)
    report = loop(
        NAME, units, worker, overwrite=overwrite, progress=progress, label="task vectors", unit_name="models"
    )
    return finish_report(layout, report)


def _named(project: Project, selection: TaskVectorSelection) -> bool:
    return bool(selection.folds)


def lock_roots(project: Project) -> list[Path]:
    return [project.layout.task_vectors_root]


STAGE: Stage[TaskVectorSelection, ModelUnit] = Stage(
    name=NAME,
    order=30,
    selection=TaskVectorSelection,
    plan=plan,
    run_units=run_units,
    lock_roots=lock_roots,
    gpus=False,
    named=_named,
)
