"""Stages as a Python API: open a project, plan and run any stage with a typed selection.

The CLI, array tasks (``--list-tasks``/``--task-index``), ``stephctl slurm``, ``stephctl status``
and notebooks all use this one route (see :mod:`.base` and docs/python-api.md)::

    from steph.stages import TrainSourceSelection, open_project, plan, run

    project = open_project("my-project", {"train.epochs": 2})
    units = plan(project, TrainSourceSelection(cancers=["BRCA"]))
    report = run(project, TrainSourceSelection(cancers=["BRCA"], folds=[0]))

Stages are registered in :data:`STAGES`; a package adds one with an entry point in the
``stephctl.stages`` group (docs/extending.md, "Adding a stage").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..progress import NULL_PROGRESS, Progress
from ..registry import Registry
from .base import RunUnits, Stage, task_index_from_env
from .evaluate import EvaluateSelection
from .extract import ExtractSelection
from .merge import MergeSelection
from .task_vector import TaskVectorSelection
from .train_source import TrainSourceSelection
from .transfer import TransferSelection

if TYPE_CHECKING:
    from ..config.project import Project, open_project, project_cancers, project_folds
    from ..report import StageReport
    from ..units import WorkUnit

__all__ = [
    "STAGES",
    "EvaluateSelection",
    "ExtractSelection",
    "MergeSelection",
    "Project",
    "RunUnits",
    "Stage",
    "TaskVectorSelection",
    "TrainSourceSelection",
    "TransferSelection",
    "get_stage",
    "open_project",
    "plan",
    "project_cancers",
    "project_folds",
    "run",
    "run_unit",
    "run_units",
    "stage_names",
    "stage_of",
    "stages",
    "task_index_from_env",
]

_LAZY = ("Project", "open_project", "project_cancers", "project_folds")


def __getattr__(name: str) -> Any:
    """The project names are imported on first use: ``stephctl --help`` lists the stages
    without loading the configuration machinery."""
    if name in _LAZY:
        from ..config import project

        return getattr(project, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


STAGES: Registry[Stage[Any, Any]] = Registry(
    "stage",
    "stephctl.stages",
    builtin="steph.stages.builtin:register",
    list_hint=" (`stephctl slurm --help`)",
)
"""Every stage, built-in and plugin, by name."""


def stages() -> list[Stage[Any, Any]]:
    """Every registered stage, in pipeline order."""
    return sorted((STAGES.get(name) for name in STAGES.names()), key=lambda s: (s.order, s.name))


def stage_names() -> list[str]:
    """Names of :func:`stages`, in pipeline order."""
    return [stage.name for stage in stages()]


def get_stage(name: str) -> Stage[Any, Any]:
    """The stage called ``name``.

    Raises:
        UnknownNameError: no such stage (lists the valid ones, with a did-you-mean).
    """
    return STAGES.get(name)


def stage_of(selection: object) -> Stage[Any, Any]:
    """The stage whose selection type ``selection`` is.

    Raises:
        TypeError: not a selection of any registered stage.
    """
    for stage in stages():
        if isinstance(selection, stage.selection):
            return stage
    raise TypeError(
        f"{type(selection).__name__} is not the selection of a stage ({', '.join(stage_names())})"
    )


def plan(project: Project, selection: object) -> list[WorkUnit]:
    """The units (task list) of ``selection``'s stage, done or not."""
    return stage_of(selection).plan(project, selection)


def run(
    project: Project,
    selection: object,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    devices: Sequence[str] = (),
) -> StageReport:
    """Run ``selection``'s stage on the whole selection; finished units are skipped unless
    ``overwrite``. Returns the stage's report (``EvaluationReport`` for evaluate)."""
    return stage_of(selection).run(
        project, selection, overwrite=overwrite, progress=progress, devices=devices
    )


def run_units(
    project: Project,
    units: Sequence[WorkUnit],
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    devices: Sequence[str] = (),
) -> StageReport:
    """Run units of a :func:`plan` (of one stage) in this process, each under its lock; done ones
    are skipped unless ``overwrite``. A unit whose input is missing stops the run (exit 1)."""
    names = sorted({unit.stage for unit in units})
    if len(names) > 1:
        raise ValueError(f"units of several stages ({', '.join(names)}): run each stage's units apart")
    if not units:
        raise ValueError("no units to run")
    return get_stage(names[0]).run_units(
        project, units, overwrite=overwrite, progress=progress, devices=devices
    )


def run_unit(
    project: Project,
    unit: WorkUnit,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    devices: Sequence[str] = (),
) -> StageReport:
    """Run one unit of a :func:`plan` (:func:`run_units` of that one unit)."""
    return run_units(project, [unit], overwrite=overwrite, progress=progress, devices=devices)
