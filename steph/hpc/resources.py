"""Whether the resources of generated Slurm arrays fit the cluster, from ``sinfo``.

A request no node can satisfy is accepted by many clusters and then pends forever (``cpus: 8``
on a partition of 2-CPU nodes: ``Reason=PartitionConfig``), or sbatch refuses it mid-chain
(``gpus: 1`` where no node has a GPU). :func:`resource_problems` compares each array's
``--cpus-per-task``, ``--mem``, ``--gres=gpu:N`` and ``--time`` with the nodes and time limit of
the partition (``slurm.partition``, else the cluster's default partition) as ``sinfo`` lists them,
and says what does not fit. Where ``sinfo`` is missing or fails (not a Slurm machine) nothing is
checked.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ..config import SlurmConfig

log = logging.getLogger(__name__)

_MEM = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", re.IGNORECASE)
_MB_PER = {"": 1.0, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}


@dataclass(frozen=True)
class NodeResources:
    """One node of a partition as ``sinfo -N`` lists it."""

    partition: str
    default: bool
    cpus: int
    mem_mb: int
    gpus: int
    time_minutes: float | None
    """The partition's time limit (None: infinite)."""


def mem_mb(text: str) -> float:
    """An sbatch ``--mem`` value in megabytes (no suffix: megabytes, as sbatch reads it).

    >>> mem_mb("32G"), mem_mb("1500M"), mem_mb("2048")
    (32768.0, 1500.0, 2048.0)
    """
    match = _MEM.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(f"not a memory size: {text!r}")
    return float(match.group(1)) * _MB_PER[match.group(2).upper()]


def time_minutes(text: str) -> float | None:
    """A Slurm time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in minutes; None for
    ``infinite``/``UNLIMITED``.

    >>> time_minutes("04:00:00"), time_minutes("1-00:30"), time_minutes("90"), time_minutes("infinite")
    (240.0, 1470.0, 90.0, None)
    """
    value = str(text).strip().lower()
    if value in ("infinite", "unlimited", "none", ""):
        return None
    days = 0
    if "-" in value:
        head, value = value.split("-", 1)
        days = int(head)
        parts = [int(p) for p in value.split(":")] + [0, 0]
        return days * 1440 + parts[0] * 60 + parts[1] + parts[2] / 60
    parts = [int(p) for p in value.split(":")]
    if len(parts) == 1:
        return float(parts[0])
    if len(parts) == 2:
        return parts[0] + parts[1] / 60
    return parts[0] * 60 + parts[1] + parts[2] / 60


def gres_gpus(text: str) -> int:
    """GPUs in an ``sinfo %G`` value (``gpu:a100:4(S:0-1),gpu:2`` -> 6; ``(null)`` -> 0).

    >>> gres_gpus("gpu:a100:4(S:0-1),gpu:2"), gres_gpus("(null)")
    (6, 0)
    """
    total = 0
    for entry in re.sub(r"\([^)]*\)", "", text).split(","):
        fields = entry.strip().split(":")
        if fields[0] == "gpu" and len(fields) > 1 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def read_sinfo(partition: str | None, *, sinfo: str = "sinfo") -> list[NodeResources] | None:
    """The nodes of ``partition`` (None: every partition), or None when sinfo is unavailable."""
    command = [sinfo, "-h", "-N", "-o", "%P|%c|%m|%G|%l"]
    if partition:
        command += ["-p", partition]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("resources not checked: %s", exc)
        return None
    if done.returncode != 0:
        log.debug("resources not checked: sinfo exit %d: %s", done.returncode, done.stderr.strip())
        return None
    nodes = []
    for line in done.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        name, cpus, memory, gres, limit = fields
        try:
            nodes.append(
                NodeResources(
                    partition=name.rstrip("*"),
                    default=name.endswith("*"),
                    cpus=int(re.sub(r"\D", "", cpus) or 0),
                    mem_mb=int(re.sub(r"\D", "", memory) or 0),
                    gpus=gres_gpus(gres),
                    time_minutes=time_minutes(limit),
                )
            )
        except ValueError:
            continue
    return nodes


def resource_problems(
    config: SlurmConfig, gpus: Sequence[int], nodes: Sequence[NodeResources] | None
) -> list[str]:
    """What of ``config`` (and the GPUs per task of each array, ``gpus``) no node can give.

    Args:
        config: The resources of every array task (cpus, mem, time, partition).
        gpus: GPUs per task of each array to submit.
        nodes: :func:`read_sinfo` of the partition (None: not a Slurm machine, nothing checked).

    Returns:
        One sentence per problem, empty when everything fits or nothing could be checked.
    """
    if nodes is None:
        return []
    if config.partition:
        chosen = [n for n in nodes if n.partition == config.partition]
        where = f"partition {config.partition}"
        if not chosen:
            return [f"{where} has no nodes (sinfo -p {config.partition} lists none)"]
    else:
        defaults = [n for n in nodes if n.default]
        chosen = defaults or list(nodes)
        where = f"the default partition {chosen[0].partition}" if defaults else "the cluster"
        if not chosen:
            return []
    problems = []
    cpus = max(n.cpus for n in chosen)
    if config.cpus > cpus:
        problems.append(f"cpus {config.cpus} per task, but the nodes of {where} have at most {cpus} CPUs")
    memory = max(n.mem_mb for n in chosen)
    try:
        wanted = mem_mb(config.mem)
    except ValueError:
        wanted = 0.0
    if memory and wanted > memory:
        problems.append(f"mem {config.mem} per task, but the nodes of {where} have at most {memory} MB")
    most = max(n.gpus for n in chosen)
    needed = max(gpus, default=0)
    if needed > most:
        have = f"at most {most} GPUs" if most else "no GPU (no gpu gres)"
        problems.append(f"gpus {needed} per task, but the nodes of {where} have {have}")
    limits = [n.time_minutes for n in chosen]
    limit = None if any(v is None for v in limits) else max(v for v in limits if v is not None)
    try:
        asked = time_minutes(config.time)
    except ValueError:
        asked = None
    if limit is not None and asked is not None and asked > limit:
        problems.append(f"time {config.time} per task, but the time limit of {where} is {limit:g} minutes")
    return problems
