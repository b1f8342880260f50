"""The CPU threads of a process, sized before torch starts: the CPUs it may use, waiting that yields.

PyTorch (OpenMP, MKL) starts one intra-op thread per core of the machine and, between parallel
regions, lets idle threads spin. On a shared node both hurt: an array task given 2 CPUs of a
64-core node (Slurm without CPU binding, a container with a CPU quota) runs 64 threads, and
when other processes hold the cores, a parallel region waits for its descheduled threads while
the others spin. Measured on the 2-core development machine at a load average of 17-20 (other
processes' work), 3 training steps of ABMIL at D = 1536 over 8 bags of 200-1,200 patches, one
process at a time: 18.0-23.6 s wall (7.1-8.1 CPU-s) with the defaults, 5.5-6.7 s (4.6-5.1 CPU-s)
with ``OMP_WAIT_POLICY=PASSIVE``, 9.2-9.5 s with one thread, 8.7 s with a spin count of 10,000.

:func:`configure` therefore sets, where the environment does not already:

- ``OMP_WAIT_POLICY=PASSIVE``: idle threads sleep instead of spinning;
- ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``: :func:`usable_cpus` when that is fewer than the
  machine's cores: the process's CPU affinity, ``SLURM_CPUS_PER_TASK``, and the cgroup CPU quota
  (``cpu.max``, or ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), whichever is smallest.

OpenMP reads them once, when torch is first imported: ``stephctl`` calls :func:`configure` first
thing; from Python, call it before ``import torch`` (after, it can only lower torch's thread
count). A value set in the environment always wins.

The work sizes the threads too. Small operators do not pay for a parallel region: waking a
sleeping thread and joining it costs more than it saves, and with passive waiting every region
wakes threads. Training and prediction on CPU therefore run with :func:`threads_for_work`
intra-op threads, one per :data:`MIN_FLOPS_PER_THREAD` of the step's largest matrix product,
inside :func:`intra_op_threads` (never more than the process has). Measured on the 2-core
development machine, one ABMIL training step with 1 and 2 threads (``OMP_WAIT_POLICY=PASSIVE``,
two runs): 2 threads take 2.24-2.27x as long on the demo's sizes (D = 128, widths 64/32, 8 bags
of about 37 patches: a 4.8 MFLOP product), 1.19-1.33x at D = 384 with 16 bags of about 100
patches (157 MFLOP), 0.70-0.74x at D = 768 with 200-patch bags (0.8 GFLOP) and 0.58-0.68x at
D = 1536 (3.2 GFLOP); STEPH, whose merged encoder runs bag by bag on CPU, 1.67-1.71x,
1.42-1.56x, 0.98-1.01x (79 MFLOP), 0.80-0.85x (236 MFLOP) and 0.64-0.73x (1.6 GFLOP) on the
same sizes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpus(root: Path = CGROUP) -> float | None:
    """CPUs the cgroup quota allows (quota / period), or None where there is no quota."""
    v2 = root / "cpu.max"
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_file, period_file = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            quota_us = int(quota_file.read_text())
            return None if quota_us <= 0 else quota_us / int(period_file.read_text())
    except (OSError, ValueError):
        return None
    return None


def usable_cpus(environ: MutableMapping[str, str] | None = None, cgroup: Path = CGROUP) -> int:
    """The CPUs this process may use: the smallest of its affinity set, ``SLURM_CPUS_PER_TASK``
    and the cgroup quota (rounded up), at least 1."""
    environ = os.environ if environ is None else environ
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    slurm = environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        cpus = min(cpus, int(slurm))
    quota = cgroup_cpus(cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def configure(environ: MutableMapping[str, str] | None = None, cgroup: Path = CGROUP) -> dict[str, str]:
    """Set the thread variables of the module docstring where unset; returns what was set. If
    torch is imported already, its intra-op threads are lowered to :func:`usable_cpus` instead
    (the wait policy can no longer change)."""
    environ = os.environ if environ is None else environ
    cpus = usable_cpus(environ, cgroup)
    wanted = {"OMP_WAIT_POLICY": "PASSIVE"}
    if cpus < (os.cpu_count() or cpus):
        wanted.update(OMP_NUM_THREADS=str(cpus), MKL_NUM_THREADS=str(cpus))
    done = {k: v for k, v in wanted.items() if k not in environ}
    environ.update(done)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() > cpus:
        torch.set_num_threads(cpus)
        done["torch.set_num_threads"] = str(cpus)
    if done:
        log.debug("threads: %s", ", ".join(f"{k}={v}" for k, v in done.items()))
    return done


MIN_FLOPS_PER_THREAD = 100e6
"""Floating-point operations of a matrix product per intra-op thread below which another thread
costs more than it saves (see the module docstring's measurements)."""


def threads_for_work(flops: float, available: int) -> int:
    """Intra-op threads for matrix products of about ``flops`` each: one per
    :data:`MIN_FLOPS_PER_THREAD`, at least 1 and at most ``available``.

    >>> threads_for_work(4.8e6, 2), threads_for_work(1.3e9, 2), threads_for_work(1.3e9, 64)
    (1, 2, 13)
    """
    return max(1, min(available, int(flops // MIN_FLOPS_PER_THREAD)))


@contextlib.contextmanager
def intra_op_threads(flops: float | None) -> Iterator[int]:
    """Within the block, torch's intra-op threads are :func:`threads_for_work` of ``flops`` and
    the threads it has (never more); None leaves them. Restored on exit; yields the count."""
    import torch

    before = torch.get_num_threads()
    wanted = before if flops is None else threads_for_work(flops, before)
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if wanted != before:
            torch.set_num_threads(before)
