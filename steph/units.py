"""Units of work and the one loop that runs them (task lists, Slurm arrays, whole runs).

A stage's plan is a list of units; a unit is a small frozen dataclass with the fields that name
exactly what it does (:class:`ModelUnit` for a cancer x fold, ...), its stable ``key`` and its
``outputs`` (the files whose presence means it is done). :func:`run_units` is the only place that
turns a list of units into a :class:`~steph.report.StageReport`: for each unit it skips a done one
(by its outputs), takes the unit's lock, checks again under the lock (another process may have
finished it), runs the stage's work for that one unit, and reports what happened (done, skipped,
failed with the message, or locked by another process). A worker that can run several units
together (:class:`GroupWorker`: a merge method's folds in the same optimiser steps) groups the
plan; each group's units are checked and locked one by one, and the rest run in one call. What
a stage does for one unit is its :class:`UnitWorker`; what it loads once for all units (theta0,
cohorts, bags) lives in the worker.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .errors import LockedError, StephError
from .faults import point
from .fileio import os_error_message
from .locks import hold
from .progress import NULL_PROGRESS, Progress
from .report import ItemResult, StageReport, Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkUnit:
    """One independently runnable piece of a stage.

    ``key`` is stable and human readable (``BRCA/fold_0``, ``BRCA/steph/fold_2``, ``shard_3``);
    ``outputs`` are the files whose presence means the unit is done. A stage's own unit type adds
    the fields its work needs (:class:`ModelUnit`, ``MergeUnit`` ...); :attr:`params` lists them.
    """

    stage: str
    key: str
    outputs: tuple[Path, ...] = ()

    @property
    def done(self) -> bool:
        return bool(self.outputs) and all(p.exists() for p in self.outputs)

    @property
    def params(self) -> dict[str, Any]:
        """The fields of the unit's own type (what the stage needs to run exactly this unit)."""
        base = {f.name for f in fields(WorkUnit)}
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in base}

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "key": self.key,
            "done": self.done,
            "outputs": [str(p) for p in self.outputs],
            "params": self.params,
        }


def _plain(value: Any) -> Any:
    """A field value as JSON data (paths as strings, tuples as lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ModelUnit(WorkUnit):
    """A (cancer, fold) unit: one source model (train-source) or its task vector (task-vector)."""

    cancer: str = ""
    fold: int = 0


class StopRun(Exception):
    """Raised by a worker for an error that stops the whole run instead of failing its unit
    (every unit would fail the same way: extract's encoder without weights); :func:`run_units`
    raises ``error`` itself."""

    def __init__(self, error: StephError) -> None:
        super().__init__(str(error))
        self.error = error


U = TypeVar("U", bound=WorkUnit)
U_contra = TypeVar("U_contra", bound=WorkUnit, contravariant=True)


@dataclass(frozen=True)
class UnitLock:
    """The lock a unit runs under.

    Attributes:
        path: The output whose ``.lock`` file is taken (:func:`steph.locks.hold`).
        what: The unit as named in messages (``task vector BRCA/fold_0``).
        temp_dirs: The unit's other output folders (temporary files of dead writers are removed
            there when a dead lock is reclaimed).
        where: The unit as named in failure messages (default: ``what``).
        record: The unit's record, written last (its presence marks the unit done); it is removed
            under the lock before the work starts, so a unit interrupted from then on is not done.
    """

    path: Path
    what: str
    temp_dirs: tuple[Path, ...] = ()
    where: str = ""
    record: Path | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of one unit: a report item without its key."""

    status: Status
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class UnitWorker(Protocol[U_contra]):
    """A stage's work on one unit, with whatever it loaded once for all of them."""

    def refuse(self, unit: U_contra) -> str | Outcome | None:
        """Why ``unit`` cannot run (it fails without taking its lock: the message, or the failed
        outcome with its details), or None."""
        ...

    def skipped(self, unit: U_contra, *, by_other: bool) -> Outcome:
        """The outcome of a unit found done (``by_other``: finished by another process while
        this one waited for its lock)."""
        ...

    def lock(self, unit: U_contra) -> UnitLock | None:
        """The lock ``unit`` runs under; None for a unit that writes nothing of its own (an
        evaluate fold is only read: the summary is written after every fold)."""
        ...

    def run(self, unit: U_contra) -> Outcome:
        """Do the unit's work (under its lock); raise a :class:`~steph.errors.StephError` or an
        ``OSError`` to fail it."""
        ...


class GroupWorker(UnitWorker[U], Protocol[U]):
    """A worker that can run several units together (a merge method's folds trained in the same
    optimiser steps): :func:`run_units` asks it how to group the plan and runs each group of
    more than one unit through :meth:`run_group`, every unit under its own lock."""

    def together(self, units: Sequence[U]) -> list[list[U]]:
        """``units`` partitioned into groups, in the order they run (a unit alone is a group)."""
        ...

    def run_group(self, units: Sequence[U]) -> list[Outcome]:
        """Do the work of ``units`` (each under its lock, none done), one outcome per unit;
        raise a :class:`~steph.errors.StephError` or an ``OSError`` to fail them all."""
        ...


def run_units(
    stage: str,
    units: Sequence[U],
    worker: UnitWorker[U],
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    label: str | None = None,
    unit_name: str = "units",
    look_ahead: Callable[[Sequence[U]], None] | None = None,
    into: StageReport | None = None,
) -> StageReport:
    """Run ``units`` one by one through ``worker`` and report each (the stage's unit loop).

    Args:
        stage: The stage's name (the report's, and the lock's ``--clear-stale-locks`` hint).
        units: Units of the stage's plan, in order.
        worker: The stage's work on one unit.
        overwrite: Redo units that are done.
        progress: One step per unit, under ``label`` (default: the stage's name).
        unit_name: What a unit is called on the progress bar.
        look_ahead: Called with the units after each one just before it is handled (a worker
            that prepares the next unit in the background while one runs: extract's slides).
        into: The report to add the items to (default: a new one); the items of the units
            handled so far are in it even when the run stops (extract's failures.csv).

    Raises:
        StephError: the error of a :class:`StopRun` a unit raised (the units after it do not run).
    """
    report = StageReport(stage) if into is None else into
    shown = label or stage
    progress.start(shown, len(units), unit=unit_name)
    together = getattr(worker, "together", None)
    groups: list[list[U]] = together(units) if together is not None else [[u] for u in units]
    try:
        for i, group in enumerate(groups):
            if look_ahead is not None:
                look_ahead([u for later in groups[i + 1 :] for u in later])
            if len(group) == 1:
                items = [run_unit(stage, group[0], worker, overwrite=overwrite)]
            else:
                items = run_group(stage, group, worker, overwrite=overwrite)  # type: ignore[arg-type]
            for unit, item in zip(group, items, strict=True):
                report.items.append(item)
                progress.advance(shown, 1, item=unit.key)
    except StopRun as stop:
        raise stop.error from None
    finally:
        progress.finish(shown)
    return report


def run_unit(stage: str, unit: U, worker: UnitWorker[U], *, overwrite: bool = False) -> ItemResult:
    """One unit: skip it when done, else run it under its lock (if it has one); every failure
    becomes its item."""
    if unit.done and not overwrite:
        return _item(unit, worker.skipped(unit, by_other=False))
    why = worker.refuse(unit)
    if isinstance(why, Outcome):
        log.error("%s: %s", unit.key, why.message)
        return _item(unit, why)
    if why is not None:
        log.error("%s", why)
        return ItemResult(unit.key, Status.FAILED, why)
    lock = worker.lock(unit)
    where = unit.key if lock is None else lock.where or lock.what
    try:
        if lock is None:
            outcome = worker.run(unit)
        else:
            with hold(lock.path, what=lock.what, stage=stage, temp_dirs=lock.temp_dirs):
                if unit.done and not overwrite:  # another process finished it meanwhile
                    return _item(unit, worker.skipped(unit, by_other=True))
                if lock.record is not None:
                    lock.record.unlink(missing_ok=True)
                point(f"{stage}:locked")
                outcome = worker.run(unit)
    except LockedError as exc:
        log.warning("%s: %s", where, exc)
        return ItemResult(unit.key, Status.LOCKED, str(exc), _hint(exc))
    except StephError as exc:
        log.error("%s failed: %s", where, exc)
        return ItemResult(unit.key, Status.FAILED, str(exc), _hint(exc))
    except OSError as exc:
        message = os_error_message(exc, where)
        log.error("%s", message)
        return ItemResult(unit.key, Status.FAILED, message)
    return _item(unit, outcome)


def run_group(
    stage: str, units: Sequence[U], worker: GroupWorker[U], *, overwrite: bool = False
) -> list[ItemResult]:
    """Units that run together: each is skipped, refused or locked as :func:`run_unit` does it,
    the others run in one :meth:`GroupWorker.run_group` under all their locks (a failure of the
    shared work fails each of them); one item per unit, in order."""
    items: dict[str, ItemResult] = {}
    runnable: list[U] = []
    with contextlib.ExitStack() as held:
        for unit in units:
            if unit.done and not overwrite:
                items[unit.key] = _item(unit, worker.skipped(unit, by_other=False))
                continue
            why = worker.refuse(unit)
            if why is not None:
                outcome = why if isinstance(why, Outcome) else Outcome(Status.FAILED, why)
                log.error("%s: %s", unit.key, outcome.message)
                items[unit.key] = _item(unit, outcome)
                continue
            lock = worker.lock(unit)
            if lock is not None:
                where = lock.where or lock.what
                try:
                    held.enter_context(hold(lock.path, what=lock.what, stage=stage, temp_dirs=lock.temp_dirs))
                except LockedError as exc:
                    log.warning("%s: %s", where, exc)
                    items[unit.key] = ItemResult(unit.key, Status.LOCKED, str(exc), _hint(exc))
                    continue
                except StephError as exc:
                    log.error("%s failed: %s", where, exc)
                    items[unit.key] = ItemResult(unit.key, Status.FAILED, str(exc), _hint(exc))
                    continue
                except OSError as exc:  # the lock cannot be written: that unit fails alone
                    message = os_error_message(exc, where)
                    log.error("%s", message)
                    items[unit.key] = ItemResult(unit.key, Status.FAILED, message)
                    continue
                if unit.done and not overwrite:  # another process finished it meanwhile
                    items[unit.key] = _item(unit, worker.skipped(unit, by_other=True))
                    continue
                if lock.record is not None:
                    lock.record.unlink(missing_ok=True)
            runnable.append(unit)
        if runnable:
            point(f"{stage}:locked")
            names = ", ".join(u.key for u in runnable)
            try:
                if len(runnable) == 1:
                    outcomes = [worker.run(runnable[0])]
                else:
                    outcomes = worker.run_group(runnable)
                for unit, outcome in zip(runnable, outcomes, strict=True):
                    items[unit.key] = _item(unit, outcome)
            except StephError as exc:
                log.error("%s failed: %s", names, exc)
                items.update(
                    {u.key: ItemResult(u.key, Status.FAILED, str(exc), _hint(exc)) for u in runnable}
                )
            except OSError as exc:
                message = os_error_message(exc, names)
                log.error("%s", message)
                items.update({u.key: ItemResult(u.key, Status.FAILED, message) for u in runnable})
    return [items[u.key] for u in units]


def _hint(exc: StephError) -> dict[str, Any]:
    """The error's hint as an item detail (``--json`` consumers read the fix apart)."""
    return {"hint": exc.hint} if exc.hint else {}


def _item(unit: WorkUnit, outcome: Outcome) -> ItemResult:
    return ItemResult(unit.key, outcome.status, outcome.message, dict(outcome.details))
