"""Threads sized from the CPUs a process may use, and passive waiting, before torch starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from steph import threads


def test_usable_cpus_is_the_smallest_of_affinity_slurm_and_the_cgroup_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    no_quota = tmp_path / "none"
    assert threads.usable_cpus({}, no_quota) == affinity
    assert threads.usable_cpus({"SLURM_CPUS_PER_TASK": "1"}, no_quota) == 1
    assert threads.usable_cpus({"SLURM_CPUS_PER_TASK": "999"}, no_quota) == affinity
    assert threads.usable_cpus({"SLURM_CPUS_PER_TASK": "x"}, no_quota) == affinity
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("50000 100000\n")  # half a CPU: at least 1
    assert threads.cgroup_cpus(v2) == 0.5 and threads.usable_cpus({}, v2) == 1
    (v2 / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpus(v2) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("150000")
    (v1 / "cpu.cfs_period_us").write_text("100000")
    assert threads.cgroup_cpus(v1.parent) == 1.5
    assert threads.usable_cpus({}, v1.parent) == min(affinity, 2)


def test_configure_sets_only_what_the_environment_leaves_unset(tmp_path: Path) -> None:
    env: dict[str, str] = {"SLURM_CPUS_PER_TASK": "1"}
    done = threads.configure(env, tmp_path)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    if (os.cpu_count() or 1) > 1:
        assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
        assert {"OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS"} <= set(done)
    mine = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "7", "SLURM_CPUS_PER_TASK": "1"}
    threads.configure(mine, tmp_path)
    assert mine["OMP_WAIT_POLICY"] == "ACTIVE" and mine["OMP_NUM_THREADS"] == "7"


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: nothing to lower")
def test_the_cli_process_runs_torch_on_the_cpus_slurm_gives_it() -> None:
    """The stephctl entry point configures threads before torch is imported."""
    program = (
        "import sys\n"
        "from stephctl import main as m\n"
        "m.app = lambda: None\n"
        "m.main()\n"
        "import torch\n"
        "print(torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", program],
        env={**env, "SLURM_CPUS_PER_TASK": "1"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_threads_for_work_gives_a_thread_per_hundred_mflop_within_what_is_available() -> None:
    import doctest

    assert doctest.testmod(threads).failed == 0
    assert threads.threads_for_work(0, 8) == 1
    assert threads.threads_for_work(199e6, 8) == 1
    assert threads.threads_for_work(200e6, 8) == 2
    assert threads.threads_for_work(1e12, 8) == 8
    assert threads.threads_for_work(1e12, 1) == 1


def test_intra_op_threads_lowers_torch_threads_in_the_block_and_restores_them() -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threads.intra_op_threads(1e6) as n:  # a small product: one thread
            assert n == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with threads.intra_op_threads(1e12) as n:  # never more than the process has
            assert n == 2 and torch.get_num_threads() == 2
        with threads.intra_op_threads(None) as n:
            assert n == 2 and torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), threads.intra_op_threads(1e6):
            raise RuntimeError("restored on the way out too")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
