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

Temporary files (``.tmp-<pid>@<host>-*``, :func:`steph.fileio.temp_name`) name their writer. One
whose writer is a dead process of this host will never be finished: it is removed by
``--clear-stale-locks`` (:func:`clear_stale_locks`, anywhere under the stage's folders) and when
:func:`hold` reclaims a dead lock (in the lock's folder and the unit's other output folders,
``temp_dirs``). Temporary files of other hosts (or without a host, written by older versions)
are removed by ``--clear-stale-locks`` once older than ``max_age_hours``, as their locks are.
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import LockedError
from .fileio import TMP_PREFIX, temp_host, temp_name

log = logging.getLogger(__name__)

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


def reclaim_dead(path: Path, temp_dirs: Iterable[Path] = ()) -> LockInfo | None:
    """Remove the lock at ``path`` if its process is dead on this host; returns what was removed.

    Serialised by the lock's own lock (``<path>.lock``): the lock is re-read under it and removed
    only if it is still the dead one, so a fresh lock taken meanwhile is never deleted. The
    temporary files of dead writers of this host in the lock's folder and in ``temp_dirs`` (the
    unit's other output folders) are removed with it.
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
        for folder in dict.fromkeys([path.parent, *temp_dirs]):
            for leftover in dead_temp_files(folder):
                _remove(leftover)
                log.warning("removed the temporary file of a dead writer: %s", leftover)
        log.warning("reclaimed the lock of dead process %d on this host: %s", info.pid, path)
        return info
    finally:
        release(guard)


@contextlib.contextmanager
def hold(
    output: Path, *, what: str | None = None, stage: str | None = None, temp_dirs: Iterable[Path] = ()
) -> Iterator[Path]:
    """Hold the lock of ``output`` for the duration of the block.

    A lock left by a dead process of this host is reclaimed first (with a log line), with the
    temporary files of dead writers of this host in its folder and in ``temp_dirs`` (the unit's
    other output folders).

    Raises:
        LockedError: another process holds it (a live one, or one of another host); the hint
            names the command that clears it (``stephctl STAGE --clear-stale-locks``).
    """
    path = lock_path_for(output)
    taken = try_acquire(path)
    if not taken and reclaim_dead(path, temp_dirs) is not None:
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
    """Delete every stale lock below ``root`` and the stale temporary files there
    (:func:`stale_temp_files`); returns the locks removed."""
    removed = []
    for info in find_locks(root):
        if info.is_stale(max_age_hours):
            info.path.unlink(missing_ok=True)
            removed.append(info)
    for path in stale_temp_files(root, max_age_hours=max_age_hours):
        _remove(path)
        log.warning("removed leftover temporary file %s", path)
    return removed


_TEMP_WRITER = re.compile(rf"{re.escape(TMP_PREFIX)}(\d+)(?:@([A-Za-z0-9._-]+?))?-[0-9a-f]{{8}}-")


def temp_writer(name: str) -> tuple[int, str | None] | None:
    """The writer (pid, host) of a temporary name ``.tmp-<pid>@<host>-<8 hex>-<final>`` (host
    None in names of older versions, ``.tmp-<pid>-<8 hex>-<final>``); None for other names.

    >>> temp_writer(".tmp-123@node-7.cluster-0a1b2c3d-meta.json"), temp_writer(".tmp-9-0a1b2c3d-x.csv")
    ((123, 'node-7.cluster'), (9, None))
    >>> temp_writer("meta.json") is None
    True
    """
    match = _TEMP_WRITER.match(name)
    return (int(match.group(1)), match.group(2)) if match else None


def temp_pid(name: str) -> int | None:
    """The writer's pid in a temporary name, else None.

    >>> temp_pid(".tmp-123@h-0a1b2c3d-meta.json"), temp_pid("meta.json")
    (123, None)
    """
    writer = temp_writer(name)
    return writer[0] if writer else None


def writer_dead_here(name: str) -> bool:
    """The temporary file ``name`` was written by a process of this host that has exited."""
    writer = temp_writer(name)
    return writer is not None and writer[1] == temp_host() and not _pid_alive(writer[0])


def dead_temp_files(folder: Path) -> list[Path]:
    """Temporary files (and folders) directly in ``folder`` whose writer died on this host."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if writer_dead_here(p.name))


def stale_temp_files(root: Path, *, max_age_hours: float = DEFAULT_MAX_AGE_HOURS) -> list[Path]:
    """``.tmp-*`` files and folders below ``root`` that no writer will finish: their writer is a
    dead process of this host (:func:`writer_dead_here`), or they are older than
    ``max_age_hours`` (any host, as for locks)."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    now = time.time()
    for folder, dirs, files in os.walk(root):
        for name in [*files, *dirs]:
            if temp_writer(name) is None:
                continue
            path = Path(folder) / name
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if writer_dead_here(name) or age > max_age_hours * 3600:
                found.append(path)
        dirs[:] = [d for d in dirs if not d.startswith(TMP_PREFIX)]
    return sorted(found)


def _remove(path: Path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
