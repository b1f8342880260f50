"""Exclusive lock files for units of work on a shared file system.

A lock is ``<output>.lock`` holding JSON with host, pid and start time. It is written complete to
a temporary file first and then hard-linked to its name, which fails when the name exists (atomic
on local file systems and NFS), so a lock is never seen empty, even when its process is killed
while taking it; on file systems without hard links it is created with ``O_CREAT | O_EXCL`` and
then filled. A lock is *stale* when its process is
dead on this host, or when it is older than ``max_age_hours`` (any host).

:func:`hold` reclaims a lock whose process is dead on this host (it logs a warning): that lock can
never be released by its owner and nothing else can be working on the unit. Reclaiming is
serialised by a second lock (``<lock>.lock``), so two processes that both find the same dead lock
cannot delete each other's fresh one. Every other lock (a live process, or another host's
process) makes :func:`hold` raise :class:`~steph.errors.LockedError` with the command that clears
it; locks of other hosts are cleared by ``--clear-stale-locks`` once older than ``max_age_hours``.

``--clear-stale-locks`` (:func:`clear_stale_locks`) also removes the ``.tmp-<pid>-*`` files that
killed writers leave behind (see :func:`stale_temp_files`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import LockedError
from .fileio import TMP_PREFIX, temp_name

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
DEFAULT_MAX_AGE_HOURS = 48.0
TEMP_QUIET_S = 600.0
"""A ``.tmp-<pid>-*`` file whose pid is not running here is removed once unmodified this long."""


def lock_path_for(output: Path) -> Path:
    return output.with_name(output.name + LOCK_SUFFIX)


@dataclass(frozen=True)
class LockInfo:
    path: Path
    host: str
    pid: int
    started: float

    @property
    def age_hours(self) -> float:
        return max(0.0, time.time() - self.started) / 3600.0

    def is_stale(self, max_age_hours: float = DEFAULT_MAX_AGE_HOURS) -> bool:
        if self.host == socket.gethostname() and not _pid_alive(self.pid):
            return True
        return self.age_hours > max_age_hours

    @property
    def dead_here(self) -> bool:
        """Its process ran on this host and has exited: the lock can never be released."""
        return self.host == socket.gethostname() and not _pid_alive(self.pid)

    def describe(self) -> str:
        return f"held by pid {self.pid} on {self.host} for {self.age_hours:.2f} h"


def clear_hint(info: LockInfo | None, path: Path, stage: str | None) -> str:
    """The hint that clears a lock: the stage's ``--clear-stale-locks`` when that removes it,
    otherwise what to wait for and what to delete."""
    command = f"`stephctl {stage} --clear-stale-locks`" if stage else "the stage's --clear-stale-locks"
    if info is not None and info.is_stale():
        return f"its process is gone; run {command} (or delete {path})"
    who = f"pid {info.pid} on {info.host}" if info is not None else "another process"
    return (
        f"{who} is working on it: wait for it to finish; if it died, delete {path} "
        f"({command} removes such a lock once it is {DEFAULT_MAX_AGE_HOURS:.0f} h old)"
    )


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def read_lock(path: Path) -> LockInfo | None:
    """Parse a lock file; an unreadable or half-written lock counts as pid 0 (stale on age)."""
    try:
        data = json.loads(path.read_text())
        return LockInfo(path, str(data["host"]), int(data["pid"]), float(data["started"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        try:
            started = path.stat().st_mtime
        except FileNotFoundError:
            return None
        return LockInfo(path, "?", 0, started)


# errno values of link() on file systems (or mounts) that do not support hard links
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}


def try_acquire(path: Path) -> bool:
    """Take the lock at ``path``; False if it already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
    tmp = temp_name(path)
    try:
        tmp.write_text(payload)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            return _create_exclusive(path, payload)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _create_exclusive(path: Path, payload: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(payload)
    return True


def release(path: Path) -> None:
    info = read_lock(path)
    if info is not None and info.pid == os.getpid() and info.host == socket.gethostname():
        path.unlink(missing_ok=True)


def reclaim_dead(path: Path) -> LockInfo | None:
    """Remove the lock at ``path`` if its process is dead on this host; returns what was removed.

    Serialised by the lock's own lock (``<path>.lock``): the lock is re-read under it and removed
    only if it is still the dead one, so a fresh lock taken meanwhile is never deleted.
    """
    info = read_lock(path)
    if info is None or not info.pid or not info.dead_here:
        return None
    guard = lock_path_for(path)
    if not try_acquire(guard):
        return None
    try:
        again = read_lock(path)
        if again is None or (again.pid, again.host, again.started) != (info.pid, info.host, info.started):
            return None
        path.unlink(missing_ok=True)
        remove_temp_files(path.parent, pids={info.pid})
        log.warning("reclaimed the lock of dead process %d on this host: %s", info.pid, path)
        return info
    finally:
        release(guard)


@contextlib.contextmanager
def hold(output: Path, *, what: str | None = None, stage: str | None = None) -> Iterator[Path]:
    """Hold the lock of ``output`` for the duration of the block.

    A lock left by a dead process of this host is reclaimed first (with a log line).

    Raises:
        LockedError: another process holds it (a live one, or one of another host); the hint
            names the command that clears it (``stephctl STAGE --clear-stale-locks``).
    """
    path = lock_path_for(output)
    taken = try_acquire(path)
    if not taken and reclaim_dead(path) is not None:
        taken = try_acquire(path)
    if not taken:
        info = read_lock(path)
        state = info.describe() if info else "held"
        stale = info is not None and info.is_stale()
        raise LockedError(
            f"{what or output} is locked ({state}{', stale' if stale else ''}): {path}",
            hint=clear_hint(info, path, stage),
        )
    try:
        yield path
    finally:
        release(path)


@contextlib.contextmanager
def hold_waiting(output: Path, *, timeout_s: float = 120.0, poll_s: float = 0.05) -> Iterator[Path]:
    """Like :func:`hold`, but wait (up to ``timeout_s``) for another holder to finish.

    For short critical sections such as rewriting a shared summary file; a lock whose process
    died on this host is broken at once.
    """
    path = lock_path_for(output)
    deadline = time.monotonic() + timeout_s
    while not try_acquire(path):
        if reclaim_dead(path) is not None:
            continue
        info = read_lock(path)
        if time.monotonic() > deadline:
            raise LockedError(
                f"{output} stayed locked for {timeout_s:.0f} s ({info.describe() if info else 'held'}): {path}",
                hint="another stephctl process is writing it; if none is running, run with --clear-stale-locks",
            )
        time.sleep(poll_s)
    try:
        yield path
    finally:
        release(path)


def find_locks(root: Path) -> list[LockInfo]:
    infos = []
    for path in sorted(root.rglob(f"*{LOCK_SUFFIX}")) if root.is_dir() else []:
        info = read_lock(path)
        if info is not None:
            infos.append(info)
    return infos


def clear_stale_locks(root: Path, *, max_age_hours: float = DEFAULT_MAX_AGE_HOURS) -> list[LockInfo]:
    """Delete every stale lock below ``root`` and the temporary files of dead writers there
    (:func:`stale_temp_files`); returns the locks removed."""
    removed = []
    for info in find_locks(root):
        if info.is_stale(max_age_hours):
            info.path.unlink(missing_ok=True)
            removed.append(info)
    dead = {info.pid for info in removed if info.host == socket.gethostname()}
    for path in stale_temp_files(root, dead_pids=dead, max_age_hours=max_age_hours):
        _remove(path)
        log.warning("removed leftover temporary file %s", path)
    return removed


_TEMP_PID = re.compile(rf"{re.escape(TMP_PREFIX)}(\d+)-")


def temp_pid(name: str) -> int | None:
    """The writer's pid in a temporary name (``.tmp-<pid>-<hex>-<final>``), else None.

    >>> temp_pid(".tmp-123-0a1b2c3d-meta.json"), temp_pid("meta.json")
    (123, None)
    """
    match = _TEMP_PID.match(name)
    return int(match.group(1)) if match else None


def stale_temp_files(
    root: Path, *, dead_pids: set[int] | None = None, max_age_hours: float = DEFAULT_MAX_AGE_HOURS
) -> list[Path]:
    """``.tmp-*`` files and folders below ``root`` that no writer will finish.

    One is stale when its pid is in ``dead_pids`` (the owners of stale locks of this host just
    removed), or when no process with its pid runs here and it has not changed for
    :data:`TEMP_QUIET_S` seconds (a writer on another host keeps its file changing), or when it
    is older than ``max_age_hours``.
    """
    found: list[Path] = []
    if not root.is_dir():
        return found
    now = time.time()
    for folder, dirs, files in os.walk(root):
        for name in [*files, *dirs]:
            pid = temp_pid(name)
            if pid is None:
                continue
            path = Path(folder) / name
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if (
                pid in (dead_pids or set())
                or (not _pid_alive(pid) and age > TEMP_QUIET_S)
                or age > max_age_hours * 3600
            ):
                found.append(path)
        dirs[:] = [d for d in dirs if temp_pid(d) is None]
    return sorted(found)


def remove_temp_files(folder: Path, *, pids: set[int]) -> None:
    """Remove the temporary files of the (dead) writers ``pids`` directly in ``folder``."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if temp_pid(path.name) in pids:
            _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
