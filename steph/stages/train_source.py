"""Stage ``train-source``: one cancer-specific ABMIL per (cancer, fold) (:mod:`steph.pipeline.train_source`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..progress import NULL_PROGRESS, Progress
from .base import Stage, unit_runner

if TYPE_CHECKING:
    from pathlib import Path

    from ..config.project import Project
    from ..report import StageReport
    from ..units import WorkUnit

NAME = "train-source"


@dataclass(frozen=True)
class TrainSourceSelection:
    """Which models to train.

    Attributes:
        cancers: Cancers (default: the project's cancers).
        folds: Folds (default: the project's folds of each cancer, ``train.folds`` or its splits).
    """

    cancers: list[str] | None = None
    folds: list[int] | None = None


def plan(project: Project, selection: TrainSourceSelection) -> list[WorkUnit]:
    """One unit per (cancer, fold), done or not."""
    from ..pipeline.train_source import plan_train_source

    folds = [int(k) for k in selection.folds] if selection.folds else None
    return plan_train_source(project.layout, project.config, cancers=selection.cancers, folds=folds)


def run(
    project: Project,
    selection: TrainSourceSelection,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    **options: Any,
) -> StageReport:
    from ..pipeline.train_source import train_source_models

    return train_source_models(
        project.layout,
        project.config,
        cancers=selection.cancers,
        folds=selection.folds,
        overwrite=overwrite,
        progress=progress,
    )


def _unit_selection(unit: WorkUnit) -> TrainSourceSelection:
    return TrainSourceSelection([unit.params["cancer"]], [unit.params["fold"]])


def lock_roots(project: Project) -> list[Path]:
    return [project.layout.models_root, project.layout.results_root]


STAGE: Stage[TrainSourceSelection] = Stage(
    name=NAME,
    order=20,
    selection=TrainSourceSelection,
    plan=plan,
    run=run,
    run_unit=unit_runner(run, _unit_selection),
    lock_roots=lock_roots,
)
