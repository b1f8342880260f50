"""Per-item outcome of a stage, shared by every pipeline function.

A stage returns a :class:`StageReport`; the CLI prints it as a table (or JSON) and exits with
code 2 when any item failed or stayed locked: a locked unit is not done, so the run is not ok.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Status(str, Enum):
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    LOCKED = "locked"


@dataclass
class ItemResult:
    """What happened to one unit of work (a slide, a cancer x fold, a target x method x fold)."""

    key: str
    status: Status
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d


@dataclass
class StageReport:
    """Outcome of one stage run."""

    stage: str
    items: list[ItemResult] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, status: Status, message: str = "", **details: Any) -> ItemResult:
        item = ItemResult(key, status, message, dict(details))
        self.items.append(item)
        return item

    def count(self, status: Status) -> int:
        return sum(1 for item in self.items if item.status is status)

    @property
    def failed(self) -> list[ItemResult]:
        return [item for item in self.items if item.status is Status.FAILED]

    @property
    def undone(self) -> list[ItemResult]:
        """Items left undone: failed, or locked by another process."""
        return [item for item in self.items if item.status in (Status.FAILED, Status.LOCKED)]

    @property
    def ok(self) -> bool:
        """Every item is done or was done already (nothing failed, nothing left locked)."""
        return not self.undone

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "ok": self.ok,
            "counts": {s.value: self.count(s) for s in Status},
            "items": [item.to_dict() for item in self.items],
            "outputs": self.outputs,
        }
