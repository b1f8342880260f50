"""``stephctl transfer``: one unit per target, then the study outputs over every finished target.

A unit (target T) runs :func:`steph.transfer.zero_shot.run_target` and writes
``transfer/targets/<T>.json`` last (its presence marks the unit done; ``--overwrite`` redoes it).
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

from ..errors import LockedError, StephError
from ..fileio import os_error_message
from ..layout import normalize_cancer
from ..locks import hold, hold_waiting
from ..logs import run_log
from ..progress import NULL_PROGRESS, Progress
from ..report import StageReport, Status
from ..units import WorkUnit

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
    """Run every unit of :func:`plan_transfer` not done yet, then write the study outputs.

    Returns:
        The report: one item per target (``done``, ``skipped`` or ``failed`` with the reason),
        ``outputs`` naming every study file.
    """
    from .study import compute_factors, load_study, write_study
    from .zero_shot import transfer_sources

    cancers = study_cancers(layout, config)
    sources = transfer_sources(config, cancers)
    units = plan_transfer(layout, config, targets=targets)
    report = StageReport(STAGE)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with run_log(layout.stage_log(STAGE, stamp)):
        progress.start(STAGE, len(units), unit="targets")
        try:
            for unit in units:
                target = unit.target
                if unit.done and not overwrite:
                    report.add(unit.key, Status.SKIPPED, "already done (--overwrite to redo)")
                else:
                    _run_unit(layout, config, target, sources, report, progress)
                progress.advance(STAGE, 1, item=unit.key)
        finally:
            progress.finish(STAGE)
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


def _run_unit(
    layout: ProjectLayout,
    config: ProjectConfig,
    target: str,
    sources: list[str],
    report: StageReport,
    progress: Progress,
) -> None:
    from .zero_shot import run_target

    output = layout.transfer_target(target)
    try:
        with hold(output, what=f"transfer {target}", stage=STAGE):
            output.unlink(missing_ok=True)
            record = run_target(layout, config, target, sources, progress=progress)
            record.write(output)
    except LockedError as exc:
        log.warning("%s: %s", target, exc)
        report.add(target, Status.LOCKED, str(exc), hint=exc.hint)
        return
    except StephError as exc:
        log.error("%s: %s", target, exc)
        report.add(target, Status.FAILED, str(exc), hint=exc.hint)
        return
    except OSError as exc:
        message = os_error_message(exc, target)
        log.error("%s", message)
        report.add(target, Status.FAILED, message)
        return
    own = next((p for p in record.pooled if p["source"] == target), None)
    headline = f"{len(record.sources)} sources x {len(record.folds)} folds"
    if own is not None and own.get("c_mean") is not None:
        headline += f", own C-index {own['c_mean']:.4f}"
    report.add(target, Status.DONE, headline)
