"""Stage ``train-source``: one cancer-specific ABMIL per (cancer, fold) (:mod:`steph.pipeline.train_source`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..progress import NULL_PROGRESS, Progress
from .base import UNIT_ERRORS, Stage, unit_runner

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


def run_units(
    project: Project,
    units: list[WorkUnit],
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    **options: Any,
) -> StageReport:
    """Several (cancer, fold) units in one call per cancer, so each cancer's features are read once."""
    from ..report import StageReport, Status

    folds: dict[str, list[WorkUnit]] = {}
    for unit in units:
        folds.setdefault(unit.params["cancer"], []).append(unit)
    report = StageReport(NAME)
    for cancer, chosen in folds.items():
        selection = TrainSourceSelection([cancer], [int(u.params["fold"]) for u in chosen])
        try:
            part = run(project, selection, overwrite=overwrite, progress=progress)
        except UNIT_ERRORS as exc:  # this cancer's input: its units fail, the other cancers run
            for unit in chosen:
                report.add(unit.key, Status.FAILED, str(exc))
            continue
        report.items.extend(part.items)
        report.outputs.update(part.outputs)
    return report


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
    run_units=run_units,
)
