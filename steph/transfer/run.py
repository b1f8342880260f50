"""``stephctl transfer``: one unit per target, then the study outputs over every finished target.

A unit (target T) runs :func:`steph.transfer.zero_shot.run_target` through the one unit loop
(:func:`steph.units.run_units`, :class:`TransferWorker`) and writes ``transfer/targets/<T>.json`` last (its presence marks the unit done; ``--overwrite`` redoes it).
After the units, the study (:mod:`steph.transfer.study`) is rebuilt from every finished target's
record, under a short lock, so the array tasks of a Slurm job may each rebuild it: the last one
sees every target. A unit that fails (a missing model, unreadable features) is reported (exit 2)
and the study is built from the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import StephError
from ..fileio import os_error_message
from ..layout import normalize_cancer
from ..locks import hold_waiting
from ..logs import run_log
from ..progress import NULL_PROGRESS, Progress
from ..report import StageReport, Status
from ..units import Outcome, UnitLock, WorkUnit, run_units

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)

STAGE = "transfer"


def study_cancers(layout: ProjectLayout, config: ProjectConfig) -> list[str]:
    """Every target of the study: the project's cancers, then the evaluation-only ones."""
    from ..config.project import project_cancers

    cancers = project_cancers(layout, config)
    return [*cancers, *[c for c in config.evaluation_only if c not in cancers]]


@dataclass(frozen=True)
class TransferUnit(WorkUnit):
    """Every source model and fold applied to ``target``."""

    target: str = ""


def plan_transfer(
    layout: ProjectLayout, config: ProjectConfig, *, targets: Sequence[str] | None = None
) -> list[TransferUnit]:
    """One unit per target (default: every cancer, evaluation-only ones included); its output is
    the target's record."""
    chosen = (
        list(dict.fromkeys(normalize_cancer(t) for t in targets))
        if targets
        else study_cancers(layout, config)
    )
    return [TransferUnit(STAGE, t, (layout.transfer_target(t),), target=t) for t in chosen]


def run_transfer(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    targets: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Run every unit of :func:`plan_transfer` not done yet, then write the study outputs
    (:func:`run_targets`)."""
    units = plan_transfer(layout, config, targets=targets)
    return run_targets(layout, config, units, overwrite=overwrite, progress=progress)


def run_targets(
    layout: ProjectLayout,
    config: ProjectConfig,
    units: Sequence[TransferUnit],
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Run ``units`` (of :func:`plan_transfer`) through :func:`~steph.units.run_units`, then, as
    the stage's finishing step, rebuild the study from every finished target.

    Returns:
        The report: one item per target (``done``, ``skipped`` or ``failed`` with the reason),
        ``outputs`` naming every study file.
    """
    from .study import compute_factors, load_study, write_study
    from .zero_shot import transfer_sources

    cancers = study_cancers(layout, config)
    worker = TransferWorker(layout, config, transfer_sources(config, cancers), progress)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with run_log(layout.stage_log(STAGE, stamp)):
        report = run_units(STAGE, units, worker, overwrite=overwrite, progress=progress, unit_name="targets")
        if not layout.transfer_targets():
            return report
        try:
            with hold_waiting(layout.transfer_file("matrix.json")):
                study = load_study(layout, config, cancers)
                compute_factors(layout, config, study)
                report.outputs.update(write_study(layout, config, study))
        except StephError as exc:
            log.error("study: %s", exc)
            report.add("study", Status.FAILED, str(exc))
        except OSError as exc:
            message = os_error_message(exc, "study")
            log.error("%s", message)
            report.add("study", Status.FAILED, message)
    return report


class TransferWorker:
    """Applies every source model and fold to one target (its features read once) and writes
    the target's record last."""

    def __init__(
        self, layout: ProjectLayout, config: ProjectConfig, sources: list[str], progress: Progress
    ) -> None:
        self.layout, self.config, self.sources, self.progress = layout, config, sources, progress

    def refuse(self, unit: TransferUnit) -> str | None:
        return None

    def skipped(self, unit: TransferUnit, *, by_other: bool) -> Outcome:
        return Outcome(
            Status.SKIPPED, "done by another process" if by_other else "already done (--overwrite to redo)"
        )

    def lock(self, unit: TransferUnit) -> UnitLock:
        output = self.layout.transfer_target(unit.target)
        return UnitLock(output, f"transfer {unit.target}", where=unit.target, record=output)

    def run(self, unit: TransferUnit) -> Outcome:
        from .zero_shot import run_target

        record = run_target(self.layout, self.config, unit.target, self.sources, progress=self.progress)
        record.write(self.layout.transfer_target(unit.target))
        own = next((p for p in record.pooled if p["source"] == unit.target), None)
        headline = f"{len(record.sources)} sources x {len(record.folds)} folds"
        if own is not None and own.get("c_mean") is not None:
            headline += f", own C-index {own['c_mean']:.4f}"
        return Outcome(Status.DONE, headline)
