"""The stage contract: a typed selection, one plan of typed units, and the unit loop.

Every stage (``extract``, ``train-source``, ``task-vector``, ``merge``, ``evaluate`` and any
plugin's) is one :class:`Stage`. The CLI command, ``--list-tasks``/``--task-index``, ``stephctl
slurm``, ``stephctl status`` and the Python API all go through it:

    command -> selection -> stage.plan(project, selection) -> stage.run_units(project, units)

A plan is the stage's *task list*. A Slurm array task ``I`` runs unit ``I`` of it (or a slice of
it: :meth:`Stage.run_units` takes any list of units of the plan and runs them in one process), so
the list is built from the stage's inputs (the config, the manifest, the split files), never from
what earlier stages produced, and stays the same while the array runs:

========================  ==========================================  ====================================
stage                     one unit                                    enumerated from
========================  ==========================================  ====================================
``extract``               a shard of slides                           slides/manifest.csv, --num-shards
``train-source``          cancer x fold                               cancers x split files
``task-vector``           cancer x fold                               cancers x split files
``merge``                 target x method x fold                      target x methods x split files
``evaluate``              target (its folds found when it runs)       targets (default: every cancer)
``transfer``              target (every source model and fold)        cancers + ``evaluation_only``
========================  ==========================================  ====================================

``run_units`` is where a stage's units are run: each one under its lock, a done one skipped by
its outputs, every outcome reported (:func:`steph.units.run_units`, the one unit loop). A whole
run is ``run_units`` on the plan of the selection; ``extract``'s run of a whole selection is
``run_units`` on one unit of its plan (every slide as one shard, or ``--shard-index``). A step that
depends on every unit (evaluate's cross-fold summary, transfer's study) is the end of the
stage's ``run_units``. An array task runs units by index
(:meth:`Stage.run_task`, :meth:`Stage.run_tasks`): an error of a unit's inputs fails its units
(exit 2) instead of stopping the command, and a unit held by a live process is waited for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

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
from ..units import WorkUnit

if TYPE_CHECKING:
    from pathlib import Path

    from ..config.project import Project
    from ..locks import LockInfo

S = TypeVar("S")
U = TypeVar("U", bound=WorkUnit)
U_contra = TypeVar("U_contra", bound=WorkUnit, contravariant=True)
S_contra = TypeVar("S_contra", contravariant=True)
TASK_ID_ENV = "SLURM_ARRAY_TASK_ID"


class RunUnits(Protocol[U_contra]):
    """A stage's run of a list of units of its plan, in one process."""

    def __call__(
        self,
        project: Project,
        units: Sequence[U_contra],
        *,
        overwrite: bool = False,
        progress: Progress = NULL_PROGRESS,
        named: bool = True,
        devices: Sequence[str] = (),
    ) -> StageReport:
        """Run ``units``; done ones are skipped unless ``overwrite``.

        ``named``: the units were asked for one by one (a task list, ``--fold K``), so a unit whose
        input is missing stops the run with the error (exit 1) instead of failing alone (exit 2).
        ``devices``: extract's worker processes, one per device (other stages have none).
        """
        ...


class RunSelection(Protocol[S_contra]):
    """A stage's own run of a whole selection (extract; see the module docstring)."""

    def __call__(
        self,
        project: Project,
        selection: S_contra,
        *,
        overwrite: bool = False,
        progress: Progress = NULL_PROGRESS,
        devices: Sequence[str] = (),
    ) -> StageReport: ...


@dataclass
class Survey:
    """What ``stephctl status`` shows of a stage: one row of units, each in a group (a cancer or
    a target), done or not by its outputs, and why (part of) the stage cannot be planned.

    Attributes:
        row: The row's name (the stage's, or what it makes: extract's row is ``features``).
        units: ``(group, unit)`` pairs.
        errors: Why (part of) the stage could not be planned.
        notes: What the counts cannot say (feature files present but incomplete ...).
    """

    row: str
    units: list[tuple[str, WorkUnit]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _no_pins(units: Sequence[WorkUnit]) -> list[str]:
    return []


def _never_named(project: Project, selection: Any) -> bool:
    return False


@dataclass(frozen=True)
class Stage(Generic[S, U]):
    """One pipeline stage.

    Attributes:
        name: Stage name, as on the command line.
        order: Position in the pipeline (commands, ``stephctl slurm`` and status list stages in
            this order).
        selection: The stage's selection dataclass (what to process); every field has a default.
        plan: ``(project, selection) -> units``: the task list, from the stage's inputs only; a
            unit is the stage's own :class:`~steph.units.WorkUnit` subclass.
        run_units: ``(project, units, *, overwrite=, progress=, named=, devices=) -> report``
            (:class:`RunUnits`): any list of units of the plan, in one process.
        lock_roots: ``project -> folders`` holding the stage's lock files (``--clear-stale-locks``,
            and the stage ``stephctl status`` names as a lock's owner).
        gpus: Whether a task of this stage wants a GPU (Slurm arrays).
        pins: Command-line options that keep the task list stable between generating an array and
            running its tasks (extract's ``--num-shards N``).
        named: Whether a selection names its units one by one (``--fold K``): then a unit with a
            missing input stops the whole run (see :class:`RunUnits`). Default: never.
        run_selection: The stage's own run of a whole selection (:class:`RunSelection`), when it
            is not ``run_units`` on the plan (extract).
        survey: ``project -> Survey``: the stage's row in ``stephctl status`` (default: the plan
            of the default selection, grouped by the key's first part, ``BRCA`` of
            ``BRCA/fold_0``).
        in_status: Whether the stage has a row in ``stephctl status`` (evaluate has none: its
            outcome is the results table).
    """

    name: str
    order: int
    selection: type[S]
    plan: Callable[[Project, S], list[U]]
    run_units: RunUnits[U]
    lock_roots: Callable[[Project], list[Path]]
    gpus: bool = True
    pins: Callable[[Sequence[U]], list[str]] = _no_pins
    named: Callable[[Project, S], bool] = _never_named
    run_selection: RunSelection[S] | None = None
    survey: Callable[[Project], Survey] | None = None
    in_status: bool = True

    def status(self, project: Project) -> Survey | None:
        """The stage's row in ``stephctl status`` (:attr:`survey`), None when it has none."""
        from ..errors import StephError

        if not self.in_status:
            return None
        if self.survey is not None:
            return self.survey(project)
        survey = Survey(self.name)
        try:
            units = self.plan(project, self.selection())
        except StephError as exc:
            survey.errors.append(exc.message)
            return survey
        survey.units = [(unit.key.split("/", 1)[0], unit) for unit in units]
        return survey

    def run(
        self,
        project: Project,
        selection: S,
        *,
        overwrite: bool = False,
        progress: Progress = NULL_PROGRESS,
        devices: Sequence[str] = (),
    ) -> StageReport:
        """Run the whole selection in this process (finished units are skipped unless
        ``overwrite``)."""
        if self.run_selection is not None:
            return self.run_selection(
                project, selection, overwrite=overwrite, progress=progress, devices=devices
            )
        units = self.plan(project, selection)
        named = self.named(project, selection)
        return self.run_units(
            project, units, overwrite=overwrite, progress=progress, named=named, devices=devices
        )

    def run_task(
        self,
        project: Project,
        index: int,
        selection: S,
        *,
        overwrite: bool = False,
        progress: Progress = NULL_PROGRESS,
        devices: Sequence[str] = (),
    ) -> StageReport:
        """Run unit ``index`` of the plan (a Slurm array task).

        Returns:
            The stage's report for that unit, with ``outputs["task"]``; a unit already done (and
            not ``overwrite``) is reported as skipped without calling the stage.

        Raises:
            ConfigError: ``index`` is outside the task list.
        """
        units = self.plan(project, selection)
        self._check_index(project, index, units)
        unit = units[index]
        if unit.done and not overwrite:
            report = StageReport(self.name)
            report.add(unit.key, Status.SKIPPED, "already done (--overwrite to redo)", task_index=index)
            return report
        report = self._run_waiting(project, [unit], overwrite=overwrite, progress=progress, devices=devices)
        report.outputs["task"] = {"index": index, "key": unit.key, "of": len(units)}
        return report

    def run_tasks(
        self,
        project: Project,
        indices: Sequence[int],
        selection: S,
        *,
        overwrite: bool = False,
        progress: Progress = NULL_PROGRESS,
        devices: Sequence[str] = (),
    ) -> StageReport:
        """Run units ``indices`` of the plan in this one process (an array task running several
        units: ``--task-index I-J``, ``stephctl slurm --units-per-task N``): Python, torch and the
        configuration are loaded once, and :attr:`run_units` reads each input once for all the
        units that use it. Units already done (and not ``overwrite``) are skipped.

        Returns:
            One report over the units, with ``outputs["tasks"]`` (indices, keys, list length).

        Raises:
            ConfigError: an index is outside the task list (checked before any unit runs).
        """
        units = self.plan(project, selection)
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
            part = self._run_waiting(project, todo, overwrite=overwrite, progress=progress, devices=devices)
            report.items.extend(part.items)
            report.outputs.update(part.outputs)
        report.outputs["tasks"] = {
            "indices": list(indices),
            "keys": [units[i].key for i in indices],
            "of": len(units),
        }
        return report

    def _run_waiting(
        self,
        project: Project,
        units: Sequence[U],
        *,
        overwrite: bool,
        progress: Progress,
        devices: Sequence[str],
    ) -> StageReport:
        """:attr:`run_units` on ``units`` (named), an error of their inputs failing them; a unit
        a live process holds is waited for (at most ``slurm.lock_wait_minutes``), then skipped
        when that process finished it, else run again (it failed or was killed)."""

        def attempt(chosen: Sequence[U]) -> StageReport:
            return _unit_errors_fail(
                self.name,
                chosen,
                lambda: self.run_units(
                    project, chosen, overwrite=overwrite, progress=progress, devices=devices
                ),
            )

        report = attempt(units)
        locked = {item.key for item in report.items if item.status is Status.LOCKED}
        if not locked:
            return report
        keys = {item.key for item in report.items}
        held = [u for u in units if u.key in locked or u.key not in keys]  # extract: items are slides
        limit = 60.0 * project.config.slurm.lock_wait_minutes
        for unit in held:
            waited = wait_for_holders(unit, limit)
            if waited is None:
                continue  # still held when the wait ran out: locked, exit 2
            if unit.done and not overwrite:
                again = StageReport(self.name)
                again.add(
                    unit.key, Status.SKIPPED, f"done by another process (waited {waited:.0f} s for its lock)"
                )
            else:
                again = attempt([unit])
            if len(units) == 1:
                return again
            at = next((i for i, item in enumerate(report.items) if item.key == unit.key), None)
            if at is None:
                report.items.extend(again.items)
            else:
                report.items[at : at + 1] = again.items
            report.outputs.update(again.outputs)
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

    def owns(self, project: Project, path: Path) -> bool:
        """Whether ``path`` (a lock file) lies under one of the stage's lock folders."""
        return any(path.is_relative_to(root) for root in self.lock_roots(project))


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
