"""Issue 16, items 1 and 10 (locks): exit codes are true, dead locks are reclaimed, the hint clears.

Kills are injected at named points (``STEPH_FAULT=kill@POINT``, see :mod:`steph.faults`): the
process SIGKILLs itself exactly there, so nothing depends on timing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cohorts import make_feature_project
from _hpc import finish, stephctl

from steph.config import load_project
from steph.errors import LockedError
from steph.fileio import temp_host, temp_name
from steph.hpc.status import project_status
from steph.locks import hold, lock_path_for, read_lock, release, try_acquire


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_lock(path: Path, pid: int, host: str | None = None, started: float | None = None) -> None:
    import socket

    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"host": host or socket.gethostname(), "pid": pid, "started": started or time.time()}
    path.write_text(json.dumps(payload))


def test_kill_during_train_source_then_rerun_finishes_the_unit(cli, tmp_path: Path) -> None:
    """Item 1: the rerun after a SIGKILL reclaims the dead process's lock (with a log line) and
    trains the unit; before the fix it printed '1 locked' and exited 0 with the unit undone."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",))
    env = {**os.environ, "STEPH_FAULT": "kill@train-source:locked"}
    [(code, _, _)] = finish([stephctl(root, "train-source", "--fold", "0", "--device", "cpu", env=env)])
    assert code == -signal.SIGKILL
    layout, _ = load_project(root)
    lock = lock_path_for(layout.model_weights("BRCA", 0))
    info = read_lock(lock)
    assert info is not None and info.is_stale()  # left behind by the killed process
    result = cli("-p", root, "train-source", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["counts"]["locked"] == 0
    assert {i["key"]: i["status"] for i in report["items"]} == {"BRCA/fold_0": "done", "BRCA/fold_1": "done"}
    assert layout.model_meta("BRCA", 0).is_file() and not lock.exists()
    assert f"reclaimed the lock of dead process {info.pid} on this host" in result.output


def test_dead_local_lock_is_reclaimed_by_a_plain_rerun(cli, tmp_path: Path) -> None:
    """Item 1 without a real kill: the lock of a dead pid of this host no longer blocks the unit."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",))
    layout, _ = load_project(root)
    lock = lock_path_for(layout.model_weights("BRCA", 0))
    _write_lock(lock, _dead_pid())
    result = cli("-p", root, "train-source", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert {i["key"]: i["status"] for i in json.loads(result.stdout)["items"]} == {
        "BRCA/fold_0": "done",
        "BRCA/fold_1": "done",
    }
    assert not lock.exists() and layout.model_meta("BRCA", 0).is_file()


def test_lock_of_a_live_process_fails_the_run_with_the_stage_hint(cli, tmp_path: Path) -> None:
    """Item 1: a lock that keeps a unit undone is a failure (exit 2), and the hint names the
    stage's own --clear-stale-locks; --json says ok false."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",))
    assert cli("-p", root, "train-source", "--device", "cpu").exit_code == 0
    layout, _ = load_project(root)
    lock = lock_path_for(layout.task_vector_meta("BRCA", 1))
    _write_lock(lock, 1, host="other-node", started=time.time() - 3600 * 100)  # old: stale by age
    result = cli("-p", root, "task-vector", "--json")
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False
    locked = [i for i in report["items"] if i["status"] == "locked"]
    assert [i["key"] for i in locked] == ["BRCA/fold_1"]
    assert "`stephctl task-vector --clear-stale-locks`" in locked[0]["message"]
    # following the hint clears it, and the rerun is complete
    assert cli("-p", root, "task-vector", "--clear-stale-locks").exit_code == 0
    assert not lock.exists() and layout.task_vector_meta("BRCA", 1).is_file()


def test_hold_reclaims_only_dead_local_locks(tmp_path: Path) -> None:
    output = tmp_path / "unit" / "meta.json"
    lock = lock_path_for(output)
    _write_lock(lock, _dead_pid())
    with hold(output, stage="merge"):
        assert read_lock(lock).pid == os.getpid()
    _write_lock(lock, _dead_pid(), host="another-host")  # another host: its pid means nothing here
    with pytest.raises(LockedError) as info, hold(output, stage="merge"):
        pass
    assert "stephctl merge --clear-stale-locks" in (info.value.hint or "")
    _write_lock(lock, os.getppid())  # a live process here
    with pytest.raises(LockedError), hold(output, stage="merge"):
        pass


def test_reclaim_never_deletes_a_fresh_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Race: two processes find the same dead lock. The one that reclaims second must not delete
    the fresh lock the first one took meanwhile (the lock is re-read under the reclaim guard)."""
    import steph.locks as locks
    from steph.locks import reclaim_dead

    lock = tmp_path / "x.lock"
    _write_lock(lock, _dead_pid())
    dead = read_lock(lock)
    assert try_acquire(tmp_path / "fresh.lock")
    calls = []

    real_read = locks.read_lock

    def stale_then_fresh(path: Path):
        if path != lock:
            return real_read(path)
        calls.append(path)
        if len(calls) == 1:
            return dead  # what this process saw before the other one reclaimed and re-locked
        if (tmp_path / "fresh.lock").exists():
            (tmp_path / "fresh.lock").replace(lock)  # the other process now holds it
        return real_read(path)

    monkeypatch.setattr(locks, "read_lock", stale_then_fresh)
    assert reclaim_dead(lock) is None
    monkeypatch.undo()
    assert lock.exists() and read_lock(lock).pid == os.getpid()
    # and while another process holds the reclaim guard, nobody else deletes the dead lock
    _write_lock(lock, _dead_pid())
    guard = lock_path_for(lock)
    assert try_acquire(guard)
    assert reclaim_dead(lock) is None and lock.exists()
    release(guard)
    assert reclaim_dead(lock) is not None and not lock.exists()


def test_clear_stale_locks_removes_temp_files_of_dead_writers(cli, tmp_path: Path) -> None:
    """Item 10a: leftover .tmp-* files are removed by --clear-stale-locks (they were kept forever)."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",))
    layout, config = load_project(root)
    folder = layout.model_dir("BRCA", 0)
    folder.mkdir(parents=True)
    dead = _dead_pid()
    _write_lock(lock_path_for(layout.model_weights("BRCA", 0)), dead)
    killed = folder / f".tmp-{dead}@{temp_host()}-0123abcd-model.safetensors"
    killed.write_bytes(b"half")
    old = (
        layout.results_dir("BRCA", "cancer-specific", 1)
        / f".tmp-{_dead_pid()}@{temp_host()}-89abcdef-predictions.csv"
    )
    old.parent.mkdir(parents=True)
    old.write_text("x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    live = temp_name(folder / "metrics.json")  # this process: still writing
    live.write_text("{}")
    assert len(project_status(layout, config).temp_files) == 3
    result = cli("-p", root, "train-source", "--clear-stale-locks", "--list-tasks")
    assert result.exit_code == 0, result.output
    assert not killed.exists() and not old.exists() and live.exists()
    assert project_status(layout, config).temp_files == [str(live)]


def test_status_names_the_stage_that_clears_each_lock(cli, tmp_path: Path) -> None:
    """Item 10b: a stale task-vector lock is cleared by task-vector's --clear-stale-locks, and
    status says so (it used to suggest train-source's, which leaves that lock in place)."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",))
    layout, _ = load_project(root)
    lock = lock_path_for(layout.task_vector_meta("BRCA", 0))
    _write_lock(lock, _dead_pid())
    result = cli("-p", root, "status")
    assert result.exit_code == 0, result.output
    assert "stephctl task-vector --clear-stale-locks" in result.output
    assert "stephctl train-source --clear-stale-locks" not in result.output
    assert cli("-p", root, "train-source", "--clear-stale-locks", "--list-tasks").exit_code == 0
    assert lock.exists()
    cli("-p", root, "task-vector", "--clear-stale-locks", "--list-tasks")
    assert not lock.exists()
