"""Exclusive lock files for units of work on a shared file system.

A lock is ``<output>.lock`` holding JSON with host, pid and start time. It is written complete to
a temporary file first and then hard-linked to its name, which fails when the name exists (atomic
on local file systems and NFS), so a lock is never seen empty, even when its process is killed
while taking it; on file systems without hard links it is created with ``O_CREAT | O_EXCL`` and
then filled. A lock is *stale* when its process is
dead on this host, or when it is older than ``max_age_hours`` (any host). Stale locks are only
removed on request (``clear_stale_locks``) or when a caller explicitly opts in.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import LockedError
from .fileio import temp_name

LOCK_SUFFIX = ".lock"
DEFAULT_MAX_AGE_HOURS = 48.0


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

    def describe(self) -> str:
        return f"held by pid {self.pid} on {self.host} for {self.age_hours:.2f} h"


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


@contextlib.contextmanager
def hold(output: Path, *, what: str | None = None) -> Iterator[Path]:
    """Hold the lock of ``output`` for the duration of the block.

    Raises:
        LockedError: another process holds it (stale or not: stale locks are cleared only on
            request, see :func:`clear_stale_locks`).
    """
    path = lock_path_for(output)
    if not try_acquire(path):
        info = read_lock(path)
        state = info.describe() if info else "held"
        stale = info is not None and info.is_stale()
        raise LockedError(
            f"{what or output} is locked ({state}{', stale' if stale else ''}): {path}",
            hint="another task is working on it; if that task died, run with --clear-stale-locks",
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
        info = read_lock(path)
        if info is not None and info.host == socket.gethostname() and info.pid and not _pid_alive(info.pid):
            path.unlink(missing_ok=True)
            continue
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
    """Delete every stale lock below ``root``; returns what was removed."""
    removed = []
    for info in find_locks(root):
        if info.is_stale(max_age_hours):
            info.path.unlink(missing_ok=True)
            removed.append(info)
    return removed
