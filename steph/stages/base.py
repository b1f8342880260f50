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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..errors import (
    ConfigError,
    ConsistencyError,
    DataError,
    LockedError,
    MissingArtifactError,
    SlideError,
    StephError,
)
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
        run_units: ``(project, units, *, overwrite=, progress=, **options) -> report``: several
            units of the plan in one call, each input read once for all of them (train-source
            reads a cancer's features once for its folds); None: :attr:`run_unit` for each.
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
    run_units: Callable[..., StageReport] | None = None

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
        self._check_index(project, index, units)
        unit = units[index]
        if unit.done and not overwrite:
            report = StageReport(self.name)
            report.add(unit.key, Status.SKIPPED, "already done (--overwrite to redo)", task_index=index)
            return report
        report = self._run_waiting(project, unit, overwrite=overwrite, progress=progress, **options)
        report.outputs["task"] = {"index": index, "key": unit.key, "of": len(units)}
        return report

    def _run_waiting(
        self, project: Project, unit: WorkUnit, *, overwrite: bool, progress: Progress, **options: Any
    ) -> StageReport:
        """Run ``unit``; when a live process holds it, wait for that process (at most
        ``slurm.lock_wait_minutes``), then verify the unit's record: done by the other process
        (skipped), else run it again (the other process failed or was killed)."""

        def attempt() -> StageReport:
            return _unit_errors_fail(
                self.name,
                [unit],
                lambda: self.run_unit(project, unit, overwrite=overwrite, progress=progress, **options),
            )

        report = attempt()
        if not any(item.status is Status.LOCKED for item in report.items):
            return report
        return self._after_lock(project, unit, report, attempt, overwrite=overwrite)

    def _after_lock(
        self,
        project: Project,
        unit: WorkUnit,
        report: StageReport,
        attempt: Callable[[], StageReport],
        *,
        overwrite: bool,
    ) -> StageReport:
        """``unit`` was found locked (``report``): wait for its holder, then verify its record."""
        waited = wait_for_holders(unit, 60.0 * project.config.slurm.lock_wait_minutes)
        if waited is None:
            return report  # still held when the wait ran out: locked, exit 2
        if unit.done and not overwrite:
            done = StageReport(self.name)
            done.add(
                unit.key, Status.SKIPPED, f"done by another process (waited {waited:.0f} s for its lock)"
            )
            return done
        return attempt()

    def run_tasks(
        self,
        project: Project,
        indices: Sequence[int],
        selection: S | Mapping[str, Any] | None = None,
        *,
        overwrite: bool = False,
        progress: Progress = NULL_PROGRESS,
        **options: Any,
    ) -> StageReport:
        """Run units ``indices`` of the plan in this one process (an array task running several
        units: ``--task-index I-J``, ``stephctl slurm --units-per-task N``).

        Python, torch and the configuration are loaded once; with :attr:`run_units` each input
        is read once for all the units that use it. Units already done (and not ``overwrite``)
        are skipped.

        Returns:
            One report over the units, with ``outputs["tasks"]`` (indices, keys, list length).

        Raises:
            ConfigError: an index is outside the task list (checked before any unit runs).
        """
        units = self.plan(project, self.select(selection))
        for index in indices:
            self._check_index(project, index, units)
        report = StageReport(self.name)
        todo = []
        for index in dict.fromkeys(indices):
            unit = units[index]
            if unit.done and not overwrite:
                report.add(unit.key, Status.SKIPPED, "already done (--overwrite to redo)", task_index=index)
            else:
                todo.append(unit)
        if todo:
            if self.run_units is not None:
                run_units = self.run_units
                part = _unit_errors_fail(
                    self.name,
                    todo,
                    lambda: run_units(project, todo, overwrite=overwrite, progress=progress, **options),
                )
                locked = {item.key for item in part.items if item.status is Status.LOCKED}
                for unit in (u for u in todo if u.key in locked):  # wait for their holders, then verify
                    mine = StageReport(self.name, [i for i in part.items if i.key == unit.key])
                    settled = self._after_lock(
                        project,
                        unit,
                        mine,
                        lambda unit=unit: self._run_waiting(
                            project, unit, overwrite=overwrite, progress=progress, **options
                        ),
                        overwrite=overwrite,
                    )
                    at = next(n for n, item in enumerate(part.items) if item.key == unit.key)
                    part.items[at : at + len(mine.items)] = settled.items
            else:
                part = StageReport(self.name)
                for unit in todo:
                    one = self._run_waiting(project, unit, overwrite=overwrite, progress=progress, **options)
                    part.items.extend(one.items)
                    part.outputs.update(one.outputs)
            report.items.extend(part.items)
            report.outputs.update(part.outputs)
        report.outputs["tasks"] = {
            "indices": list(indices),
            "keys": [units[i].key for i in indices],
            "of": len(units),
        }
        return report

    def _check_index(self, project: Project, index: int, units: Sequence[WorkUnit]) -> None:
        if not 0 <= index < len(units):
            span = f"0-{len(units) - 1}" if units else "none"
            raise ConfigError(
                f"task index {index} is out of range: {self.name} has {len(units)} tasks ({span}) for this selection",
                hint=f"see `stephctl -p {project.root} {self.name} ... --list-tasks` with the same options as the array job",
            )

    def clear_stale_locks(self, project: Project) -> list[LockInfo]:
        """Remove the stale locks (dead pid on this host, or too old) under the stage's output
        folders, and the temporary files of dead writers there (:func:`steph.locks.stale_temp_files`)."""
        from ..locks import clear_stale_locks

        removed: list[LockInfo] = []
        for root in self.lock_roots(project):
            removed.extend(clear_stale_locks(root))
        return removed


UNIT_ERRORS: tuple[type[StephError], ...] = (
    DataError,
    MissingArtifactError,
    SlideError,
    ConsistencyError,
    LockedError,
)
"""Errors of a unit's inputs or work (an unreadable feature file, a missing model): the unit
is reported failed (exit 2). Errors of the request itself (:class:`~steph.errors.ConfigError`,
unknown names, an index out of range) still stop the command (exit 1)."""


def _unit_errors_fail(stage: str, units: Sequence[WorkUnit], call: Callable[[], StageReport]) -> StageReport:
    """``call()``; an error of the units' inputs or work fails each of ``units`` instead of
    stopping the command (the one exit-code rule of docs/hpc.md: a unit asked for and not done
    is exit 2, whatever stopped it)."""
    try:
        return call()
    except UNIT_ERRORS as exc:
        report = StageReport(stage)
        for unit in units:
            report.add(unit.key, Status.FAILED, str(exc))
        return report


LOCK_POLL_S = 0.5


def wait_for_holders(unit: WorkUnit, limit_s: float, *, poll_s: float = LOCK_POLL_S) -> float | None:
    """Wait until no live process holds a lock on one of ``unit``'s outputs.

    A lock whose process is dead on this host, or which is older than the age limit, does not
    count (the next run reclaims or reports it).

    Returns:
        The seconds waited, or None when a lock was still held after ``limit_s``.
    """
    from ..locks import lock_path_for, read_lock

    started = time.monotonic()
    while True:
        held = False
        for output in unit.outputs:
            info = read_lock(lock_path_for(output))
            if info is not None and not info.is_stale():
                held = True
                break
        waited = time.monotonic() - started
        if not held:
            return waited
        if waited >= limit_s:
            return None
        time.sleep(poll_s)


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
