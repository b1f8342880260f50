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
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import MutableMapping
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
