"""Configuration of generated Slurm scripts (section ``slurm:``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ConfigError

_SBATCH_OPTION = re.compile(r"--?[A-Za-z][A-Za-z0-9-]*")
"""The option part of a ``slurm.extra`` entry (``--qos`` of ``--qos=normal``)."""


def check_extra(entry: str) -> str:
    """One ``slurm.extra`` entry: an sbatch option (``--qos=normal`` or ``--exclusive``) on one line.

    Raises:
        ConfigError: a line break anywhere in it, or an option part that is not ``--name``.
    """
    text = str(entry)
    option = text.partition("=")[0]
    if any(c in text for c in "\n\r\x00") or not _SBATCH_OPTION.fullmatch(option):
        raise ConfigError(
            f"slurm.extra: {text!r} is not one sbatch option (--name or --name=value on one line)",
            hint="fix slurm.extra in stephctl.yaml, e.g. extra: ['--qos=normal']",
        )
    return text


@dataclass(frozen=True, kw_only=True)
class SlurmConfig:
    """Resources written into ``stephctl slurm`` job scripts."""

    partition: str | None = None
    """#SBATCH --partition (None = the cluster's default)."""
    account: str | None = None
    """#SBATCH --account (None = your default account)."""
    time: str = "04:00:00"
    """Wall-clock limit per array task (#SBATCH --time)."""
    mem: str = "32G"
    """Memory per array task (#SBATCH --mem)."""
    cpus: int = 8
    """CPU cores per array task (#SBATCH --cpus-per-task)."""
    gpus: int = 1
    """GPUs per task of the GPU stages (extract, train-source, merge) as --gres=gpu:N; 0 = CPU only."""
    max_parallel: int | None = None
    """Cap on concurrently running array tasks (the %K of --array)."""
    activate: str = ""
    """Shell line run before stephctl, e.g. 'source .venv/bin/activate' or 'conda activate steph'."""
    extra: list[str] = field(default_factory=list)
    """Further #SBATCH options, e.g. ['--qos=normal']."""
    slides_per_task: int = 100
    """Slides per extract array task (shard) when --num-shards is not given."""
    units_per_task: int = 1
    """Units of a stage's task list run by one array task, in one process (Python, torch and the
    configuration load once; train-source reads a cancer's features once for its folds)."""
    lock_wait_minutes: float = 60.0
    """How long an array task (``--task-index``) whose unit is locked by a live process waits for
    that process before reporting the unit locked (exit 2); then it verifies the unit's record."""
    check_resources: bool = True
    """Before submitting, check cpus, mem, gpus and time against the partition (`sinfo`)."""

    def __post_init__(self) -> None:
        if self.cpus < 1 or self.gpus < 0:
            raise ConfigError(f"slurm.cpus must be >= 1 and slurm.gpus >= 0, got {self.cpus} and {self.gpus}")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ConfigError(f"slurm.max_parallel must be >= 1 or null, got {self.max_parallel}")
        for entry in self.extra:
            check_extra(entry)
        if self.slides_per_task < 1:
            raise ConfigError(f"slurm.slides_per_task must be >= 1, got {self.slides_per_task}")
        if self.lock_wait_minutes < 0:
            raise ConfigError(f"slurm.lock_wait_minutes must be >= 0, got {self.lock_wait_minutes}")
        if self.units_per_task < 1:
            raise ConfigError(f"slurm.units_per_task must be >= 1, got {self.units_per_task}")
