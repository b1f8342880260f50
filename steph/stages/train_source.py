"""Stage ``train-source``: one cancer-specific ABMIL per (cancer, fold) (:mod:`steph.pipeline.train_source`)."""

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


def plan(project: Project, selection: TrainSourceSelection) -> list[ModelUnit]:
    """One unit per (cancer, fold), done or not."""
    from ..pipeline.plans import plan_train_source

    folds = [int(k) for k in selection.folds] if selection.folds else None
    return plan_train_source(project.layout, project.config, cancers=selection.cancers, folds=folds)


def run_units(
    project: Project,
    units: Sequence[ModelUnit],
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    named: bool = True,
    devices: Sequence[str] = (),
) -> StageReport:
    """Train ``units``: inputs checked first, then each unit under its lock."""
    from ..pipeline.train_source import run_models

    return run_models(project.layout, project.config, units, overwrite=overwrite, progress=progress)


def lock_roots(project: Project) -> list[Path]:
    return [project.layout.models_root, project.layout.results_root]


STAGE: Stage[TrainSourceSelection, ModelUnit] = Stage(
    name=NAME,
    order=20,
    selection=TrainSourceSelection,
    plan=plan,
    run_units=run_units,
    lock_roots=lock_roots,
)
