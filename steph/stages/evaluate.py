"""Stage ``evaluate``: metrics, comparison, summary.csv and reports per target (:mod:`steph.pipeline.evaluate`).

The unit is a target (a Slurm array of evaluate is generated before any result exists, so the
task list cannot be the folds); a unit's folds are found on disk when it runs, each run through
the one unit loop, and the cross-fold summary is the stage's finishing step over every unit run
in the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..progress import NULL_PROGRESS, Progress
from .base import Stage

if TYPE_CHECKING:
    from pathlib import Path

    from ..config.project import Project
    from ..pipeline.evaluate import EvaluationReport, TargetUnit

NAME = "evaluate"


@dataclass(frozen=True)
class EvaluateSelection:
    """What to evaluate.

    Attributes:
        targets: Targets (default: every target with results; for a task list, every cancer,
            then every other target with results).
        methods: Method folders (default: every method with results).
    """

    targets: list[str] | None = None
    methods: list[str] | None = None


def plan(project: Project, selection: EvaluateSelection) -> list[TargetUnit]:
    """One unit per target (:func:`steph.pipeline.evaluate.plan_targets`)."""
    from ..pipeline.evaluate import plan_targets

    return plan_targets(project.layout, project.cancers, targets=selection.targets, methods=selection.methods)


def run_units(
    project: Project,
    units: Sequence[TargetUnit],
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    named: bool = True,
    devices: Sequence[str] = (),
) -> EvaluationReport:
    """Evaluate every fold of ``units``, then summarise them together (always recomputed:
    nothing is ever skipped). Unless ``named``, a target without results is left out."""
    from ..pipeline.evaluate import evaluate_targets

    return evaluate_targets(project.layout, project.config, units, named=named, progress=progress)


def named(project: Project, selection: EvaluateSelection) -> bool:
    """Targets named with ``--target`` must have results; by default those without are left out."""
    return bool(selection.targets)


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
    named=named,
    in_status=False,
)
