"""Issue 16, item 10a completed: the temporary file of a killed writer is removed wherever it lies.

Temporary names carry their writer (``.tmp-<pid>@<host>-``, :func:`steph.fileio.temp_name`). One
whose writer is a dead process of this host is removed by ``--clear-stale-locks`` and by the
automatic reclaim of the unit's lock, also outside the lock's folder (the predictions.csv of a
merge run lies under results/, its lock under merged/). The writers here are really killed
(``STEPH_FAULT=kill@write:predictions.csv``, :mod:`steph.faults`); nothing waits on a clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _hpc import finish, stephctl
from _merge_project import project_copy

from steph.config import load_project
from steph.fileio import TMP_PREFIX, temp_host
from steph.hpc.status import project_status
from steph.locks import LOCK_SUFFIX, lock_path_for, stale_temp_files, temp_writer


def _kill_merge_writing_predictions(root: Path) -> int:
    env = {**os.environ, "STEPH_FAULT": "kill@write:predictions.csv"}
    process = stephctl(root, "merge", "--target", "BRCA", "--fold", "0", env=env)
    pid = process.pid
    [(code, _, stderr)] = finish([process], timeout=300)
    assert code == -signal.SIGKILL, stderr[-2000:]
    return pid


def _temps(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(f"{TMP_PREFIX}*"))


def _killed_project(tmp_path_factory, tmp_path: Path) -> tuple[Path, Path]:
    root = project_copy(tmp_path_factory, tmp_path / "p")  # task vectors, no merge yet
    layout, config = load_project(root)
    pid = _kill_merge_writing_predictions(root)
    [leftover] = _temps(root)
    assert leftover.parent == layout.results_dir("BRCA", "steph", 0)  # not in the lock's folder
    assert temp_writer(leftover.name) == (pid, temp_host())
    assert lock_path_for(layout.merged_file("BRCA", "steph", 0, "meta.json")).exists()
    assert project_status(layout, config).temp_files == [str(leftover)]
    return root, leftover


def test_a_rerun_removes_the_killed_writers_temp_file_outside_the_lock_folder(
    cli, tmp_path_factory, tmp_path: Path
) -> None:
    """The plain rerun reclaimed the dead lock but left results/.../.tmp-*-predictions.csv."""
    root, leftover = _killed_project(tmp_path_factory, tmp_path)
    layout, config = load_project(root)
    result = cli("-p", root, "merge", "--target", "BRCA", "--fold", "0")
    assert result.exit_code == 0, result.output
    assert not leftover.exists() and not _temps(root)
    assert project_status(layout, config).temp_files == []
    assert not list(root.rglob(f"*{LOCK_SUFFIX}"))


def test_clear_stale_locks_removes_a_dead_writers_temp_file_without_its_lock(
    cli, tmp_path_factory, tmp_path: Path
) -> None:
    """The lock was already gone (deleted by hand, as its hint allows), so --clear-stale-locks
    removed no lock of that pid and kept the fresh temp file (10 min quiet rule)."""
    root, leftover = _killed_project(tmp_path_factory, tmp_path)
    layout, config = load_project(root)
    lock_path_for(layout.merged_file("BRCA", "steph", 0, "meta.json")).unlink()
    result = cli("-p", root, "merge", "--target", "BRCA", "--clear-stale-locks", "--list-tasks")
    assert result.exit_code == 0, result.output
    assert not leftover.exists()
    assert project_status(layout, config).temp_files == []


def test_temp_files_of_live_or_other_writers_are_kept(tmp_path: Path) -> None:
    """Only a dead writer of this host is certain; others wait for max_age_hours."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    own = tmp_path / f".tmp-{os.getpid()}@{temp_host()}-0123abcd-meta.json"  # alive: this process
    other_host = tmp_path / f".tmp-{dead.pid}@{temp_host()}-x-0123abcd-meta.json"  # not this host
    legacy = tmp_path / f".tmp-{dead.pid}-0123abcd-meta.json"  # older versions: no host
    for path in (own, other_host, legacy):
        path.write_text("{}")
    assert stale_temp_files(tmp_path) == []
    old = time.time() - 49 * 3600
    for path in (other_host, legacy):
        os.utime(path, (old, old))
    assert stale_temp_files(tmp_path) == sorted([other_host, legacy])
