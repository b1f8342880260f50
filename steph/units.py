"""Units of work: what a stage would do, enumerable before doing it (task lists, Slurm arrays)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class WorkUnit:
    """One independently runnable piece of a stage.

    ``key`` is stable and human readable (``BRCA/fold_0``, ``BRCA/steph/fold_2``, ``shard_3``);
    ``outputs`` are the files whose presence means the unit is done; ``params`` are what the
    stage function needs to run exactly this unit.
    """

    stage: str
    key: str
    outputs: tuple[Path, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return bool(self.outputs) and all(p.exists() for p in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "key": self.key,
            "done": self.done,
            "outputs": [str(p) for p in self.outputs],
            "params": self.params,
        }
