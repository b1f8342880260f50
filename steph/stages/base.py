"""The stage contract: a typed selection, a plan of units, and a run of all or one of them.

Every stage (``extract``, ``train-source``, ``task-vector``, ``merge``, ``evaluate`` and any
plugin's) is one :class:`Stage`. The CLI command, ``--list-tasks``/``--task-index``, ``stephctl
slurm``, ``stephctl status`` and the Python API all go through it:

    command -> selection -> stage.plan(project, selection) -> stage.run / stage.run_unit

A plan is the stage's *task list*. A Slurm array task ``I`` runs unit ``I`` of it, so the list is
built from the stage's inputs (the config, the manifest, the split files), never from what
earlier stages produced, and stays the same while the array runs:

========================  ==========================================  ====================================
stage                     one unit                                    enumerated from
========================  ==========================================  ====================================
``extract``               a shard of slides                           slides/manifest.csv, --num-shards
``train-source``          cancer x fold                               cancers x split files
``task-vector``           cancer x fold                               cancers x split files
``merge``                 target x method x fold                      target x methods x split files
``evaluate``              target                                      targets (default: every cancer)
``transfer``              target (every source model and fold)        cancers + ``evaluation_only``
========================  ==========================================  ====================================

Running a unit runs the stage restricted to that unit, so locking, skipping of done units and
atomic writes are the stage's own. A unit whose outputs all exist is reported as skipped
without loading anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..errors import ConfigError
from ..progress import NULL_PROGRESS, Progress
from ..report import StageReport, Status

if TYPE_CHECKING:
    from pathlib import Path

    from ..config.project import Project
    from ..locks import LockInfo
    from ..units import WorkUnit

S = TypeVar("S")
TASK_ID_ENV = "SLURM_ARRAY_TASK_ID"


def _no_pins(units: Sequence[WorkUnit]) -> list[str]:
    return []


@dataclass(frozen=True)
class Stage(Generic[S]):
    """One pipeline stage.

    Attributes:
        name: Stage name, as on the command line.
        order: Position in the pipeline (commands, ``stephctl slurm`` and status list stages in
            this order).
        selection: The stage's selection dataclass (what to process); every field has a default.
        plan: ``(project, selection) -> units``: the task list, from the stage's inputs only.
        run: ``(project, selection, *, overwrite=, progress=, **options) -> report``: the whole
            selection in one process.
        run_unit: ``(project, unit, *, overwrite=, progress=, **options) -> report``: one unit of
            the plan.
        lock_roots: ``project -> folders`` holding the stage's lock files (``--clear-stale-locks``).
        gpus: Whether a task of this stage wants a GPU (Slurm arrays).
        pins: Command-line options that keep the task list stable between generating an array and
            running its tasks (extract's ``--num-shards N``).
    """

    name: str
    order: int
    selection: type[S]
    plan: Callable[[Project, S], list[WorkUnit]]
    run: Callable[..., StageReport]
    run_unit: Callable[..., StageReport]
    lock_roots: Callable[[Project], list[Path]]
    gpus: bool = True
    pins: Callable[[Sequence[WorkUnit]], list[str]] = _no_pins

    def select(self, selection: S | Mapping[str, Any] | None = None) -> S:
        """``selection`` as this stage's selection type (a mapping gives its fields by name).

        Raises:
            ConfigError: a mapping key that is not a field of the selection.
        """
        if isinstance(selection, self.selection):
            return selection
        values = dict(selection or {})
        known = {f.name for f in fields(self.selection)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{self.name}: unknown selection field(s) {', '.join(unknown)}",
                hint=f"fields of {self.selection.__name__}: {', '.join(sorted(known))}",
            )
        return self.selection(**values)

    def run_task(
        self,
        project: Project,
        index: int,
        selection: S | Mapping[str, Any] | None = None,
        *,
        overwrite: bool = False,
        progress: Progress = NULL_PROGRESS,
        **options: Any,
    ) -> StageReport:
        """Run unit ``index`` of the plan (a Slurm array task).

        Returns:
            The stage's report for that unit, with ``outputs["task"]``; a unit already done (and
            not ``overwrite``) is reported as skipped without calling the stage.

        Raises:
            ConfigError: ``index`` is outside the task list.
        """
        units = self.plan(project, self.select(selection))
        if not 0 <= index < len(units):
            span = f"0-{len(units) - 1}" if units else "none"
            raise ConfigError(
                f"task index {index} is out of range: {self.name} has {len(units)} tasks ({span}) for this selection",
                hint=f"see `stephctl -p {project.root} {self.name} ... --list-tasks` with the same options as the array job",
            )
        unit = units[index]
        if unit.done and not overwrite:
            report = StageReport(self.name)
            report.add(unit.key, Status.SKIPPED, "already done (--overwrite to redo)", task_index=index)
            return report
        report = self.run_unit(project, unit, overwrite=overwrite, progress=progress, **options)
        report.outputs["task"] = {"index": index, "key": unit.key, "of": len(units)}
        return report

    def clear_stale_locks(self, project: Project) -> list[LockInfo]:
        """Remove the stale locks (dead pid on this host, or too old) under the stage's output
        folders, and the temporary files of dead writers there (:func:`steph.locks.stale_temp_files`)."""
        from ..locks import clear_stale_locks

        removed: list[LockInfo] = []
        for root in self.lock_roots(project):
            removed.extend(clear_stale_locks(root))
        return removed


def unit_runner(
    run: Callable[..., StageReport],
    selection_of: Callable[[WorkUnit], Any],
    options_of: Callable[[WorkUnit], Mapping[str, Any]] | None = None,
) -> Callable[..., StageReport]:
    """A stage's ``run_unit``: its ``run`` on the selection of exactly one unit of its plan.

    Args:
        run: The stage's ``run``.
        selection_of: The selection that covers only ``unit`` (from ``unit.params``).
        options_of: Run options of the unit itself (merge's run folder), if any; the caller's
            options (extract's ``devices``) are passed on as well.
    """

    def run_unit(
        project: Project,
        unit: WorkUnit,
        *,
        overwrite: bool = False,
        progress: Progress = NULL_PROGRESS,
        **options: Any,
    ) -> StageReport:
        own = dict(options_of(unit)) if options_of is not None else {}
        return run(project, selection_of(unit), overwrite=overwrite, progress=progress, **own, **options)

    return run_unit


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


def selection_list(values: Sequence[Any] | None) -> list[Any] | None:
    """A repeatable option's values as a list, None when none were given."""
    return list(values) if values else None
