"""Configuration of generated Slurm scripts (section ``slurm:``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class SlurmConfig:
    """Resources written into ``stephctl slurm`` job scripts."""

    partition: str | None = None
    account: str | None = None
    time: str = "04:00:00"
    mem: str = "32G"
    cpus: int = 8
    gpus: int = 1
    max_parallel: int | None = None
    """Cap on concurrently running array tasks (the %K of --array)."""
    activate: str = ""
    """Shell line run before stephctl, e.g. 'source .venv/bin/activate' or 'conda activate steph'."""
    extra: list[str] = field(default_factory=list)
    """Further #SBATCH options, e.g. ['--qos=normal']."""
