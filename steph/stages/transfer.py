"""Stage ``transfer``: zero-shot transfer of every source model to each target (:mod:`steph.transfer`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..progress import NULL_PROGRESS, Progress
from .base import Stage

if TYPE_CHECKING:
    from pathlib import Path

    from ..config.project import Project
    from ..report import StageReport
    from ..transfer.run import TransferUnit

NAME = "transfer"


@dataclass(frozen=True)
class TransferSelection:
    """Which targets to evaluate.

    Attributes:
        targets: Target cancers (default: every cancer of the project, evaluation-only ones included).
    """

    targets: list[str] | None = None


def plan(project: Project, selection: TransferSelection) -> list[TransferUnit]:
    """One unit per target: every source model and fold applied to it, its features read once."""
    from ..transfer import plan_transfer

    return plan_transfer(project.layout, project.config, targets=selection.targets)


def run_units(
    project: Project,
    units: Sequence[TransferUnit],
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    named: bool = True,
    devices: Sequence[str] = (),
) -> StageReport:
    """The targets of ``units`` not done yet, then the study outputs over every finished target."""
    from ..transfer.run import run_targets

    return run_targets(project.layout, project.config, units, overwrite=overwrite, progress=progress)


def lock_roots(project: Project) -> list[Path]:
    return [project.layout.transfer_root]


STAGE: Stage[TransferSelection, TransferUnit] = Stage(
    name=NAME,
    order=55,
    selection=TransferSelection,
    plan=plan,
    run_units=run_units,
    lock_roots=lock_roots,
    gpus=True,
)
