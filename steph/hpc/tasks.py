"""Task lists: every stage's units of work, enumerable up front and runnable one at a time.

A Slurm array task ``I`` runs unit ``I`` of its stage's task list. For that to be safe the list
must be the same when the array is generated and when each task starts, even if an earlier
stage has failed for some units meanwhile. Task lists are therefore built from the stages'
*inputs* (the config, the manifest, the split files), never from what earlier stages produced:

========================  ==========================================  ====================================
stage                     one unit                                    enumerated from
========================  ==========================================  ====================================
``extract``               a shard of slides (see :mod:`.shards`)      slides/manifest.csv, --num-shards
``train-source``          cancer x fold                               cancers x split files
``task-vector``           cancer x fold                               cancers x split files
``merge``                 target x method x fold                      target x methods x split files
``evaluate``              target                                      targets (default: every cancer)
========================  ==========================================  ====================================

Running unit ``I`` calls the stage's own function restricted to that unit (``cancers=[c],
folds=[k]`` ...), so locking, skipping of done units and atomic writes are the stage's. A unit
whose outputs all exist is reported as skipped without loading anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, UnknownNameError
from ..progress import NULL_PROGRESS, Progress
from ..report import StageReport, Status
from ..units import WorkUnit

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import ProjectConfig
    from ..layout import ProjectLayout
    from ..locks import LockInfo

Selection = Mapping[str, Any]
TASK_ID_ENV = "SLURM_ARRAY_TASK_ID"


@dataclass(frozen=True)
class StageTasks:
    """How one stage enumerates its units and runs exactly one of them.

    Attributes:
        name: Stage name as on the command line.
        plan: ``(layout, config, selection) -> units``, from the stage's inputs only.
        run: ``(layout, config, unit, overwrite=, progress=) -> report`` for one unit.
        lock_roots: Folders holding the stage's lock files (cleared by ``--clear-stale-locks``).
        gpus: Whether a task of this stage wants a GPU.
        pins: Command-line options that keep the list stable between generation and execution
            (extract's ``--num-shards N``).
    """

    name: str
    plan: Callable[[ProjectLayout, ProjectConfig, Selection], list[WorkUnit]]
    run: Callable[..., StageReport]
    lock_roots: Callable[[ProjectLayout, ProjectConfig], list[Path]]
    gpus: bool = True
    pins: Callable[[Sequence[WorkUnit]], list[str]] = lambda units: []


_STAGES: dict[str, StageTasks] = {}


def register_stage(tasks: StageTasks) -> StageTasks:
    """Make a stage's task list available to ``--list-tasks``, ``--task-index`` and ``stephctl slurm``."""
    _STAGES[tasks.name] = tasks
    return tasks


def stage_names() -> list[str]:
    _load_builtin()
    return list(_STAGES)


def stage_tasks(stage: str) -> StageTasks:
    """The task adapter of ``stage``.

    Raises:
        UnknownNameError: not a stage with a task list (lists the valid ones).
    """
    _load_builtin()
    if stage not in _STAGES:
        raise UnknownNameError(
            f"unknown stage {stage!r}", hint=f"stages with task lists: {', '.join(_STAGES)}"
        )
    return _STAGES[stage]


def _load_builtin() -> None:
    if not _STAGES:
        from . import stages  # noqa: F401  (registers the built-in stages)


def list_tasks(
    stage: str, layout: ProjectLayout, config: ProjectConfig, selection: Selection | None = None
) -> list[WorkUnit]:
    """The task list of ``stage`` for ``selection`` (the stage function's selection kwargs)."""
    return stage_tasks(stage).plan(layout, config, dict(selection or {}))


def pin_args(stage: str, units: Sequence[WorkUnit]) -> list[str]:
    """Options to add to every task's command line so that it sees the same list."""
    return stage_tasks(stage).pins(units)


def run_task(
    stage: str,
    layout: ProjectLayout,
    config: ProjectConfig,
    index: int,
    selection: Selection | None = None,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    **options: Any,
) -> StageReport:
    """Run unit ``index`` of the task list of ``stage``.

    ``options`` go to the stage's unit runner (extract takes ``devices``).

    Returns:
        The stage's report for that unit; a unit already done (and not ``overwrite``) is
        reported as skipped without calling the stage.

    Raises:
        ConfigError: ``index`` is outside the task list.
    """
    tasks = stage_tasks(stage)
    units = tasks.plan(layout, config, dict(selection or {}))
    if not 0 <= index < len(units):
        span = f"0-{len(units) - 1}" if units else "none"
        raise ConfigError(
            f"task index {index} is out of range: {stage} has {len(units)} tasks ({span}) for this selection",
            hint=f"see `stephctl -p {layout.root} {stage} ... --list-tasks` with the same options as the array job",
        )
    unit = units[index]
    if unit.done and not overwrite:
        report = StageReport(stage)
        report.add(unit.key, Status.SKIPPED, "already done (--overwrite to redo)", task_index=index)
        return report
    report = tasks.run(layout, config, unit, overwrite=overwrite, progress=progress, **options)
    report.outputs["task"] = {"index": index, "key": unit.key, "of": len(units)}
    return report


def task_index_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """``$SLURM_ARRAY_TASK_ID`` as an int, or None when unset (not inside an array job).

    The id is used as the index itself (not minus ``SLURM_ARRAY_TASK_MIN``), so that resubmitting
    only some indices (``--array=3,7``) runs exactly those units.

    Raises:
        ConfigError: the variable is set but is not a non-negative integer.
    """
    value = (os.environ if environ is None else environ).get(TASK_ID_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ConfigError(
            f"${TASK_ID_ENV} is {value!r}, not a task index", hint="pass --task-index I explicitly"
        )
    return int(value)


def clear_stage_locks(stage: str, layout: ProjectLayout, config: ProjectConfig) -> list[LockInfo]:
    """Remove the stale locks (dead pid on this host, or too old) under ``stage``'s output folders,
    and the temporary files of dead writers there (:func:`steph.locks.stale_temp_files`)."""
    from ..locks import clear_stale_locks

    removed: list[LockInfo] = []
    for root in stage_tasks(stage).lock_roots(layout, config):
        removed.extend(clear_stale_locks(root))
    return removed
