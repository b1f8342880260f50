"""What ``stephctl check`` found: one row per check, and per-cancer patient counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Level(str, Enum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    """The outcome of one check on one cancer (``cancer`` is ``*`` for project-wide checks)."""

    cancer: str
    check: str
    level: Level
    message: str
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["level"] = self.level.value
        return d


@dataclass
class CancerCounts:
    """Patients of one cancer: with labels, in any split, with every slide's features present."""

    labelled: int = 0
    in_splits: int = 0
    with_features: int = 0
    folds: list[int] = field(default_factory=list)
    dim: int | None = None
    evaluation_only: bool = False
    """A rare tumour: evaluated zero-shot by ``stephctl transfer`` only (no splits, no models)."""


@dataclass
class CheckReport:
    """Everything ``stephctl check`` found; ``ok`` when no check failed (warnings allowed)."""

    root: str
    encoder: str
    deep: bool
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, CancerCounts] = field(default_factory=dict)

    def add(self, cancer: str, check: str, level: Level, message: str, hint: str | None = None) -> Finding:
        finding = Finding(cancer, check, level, message, hint)
        self.findings.append(finding)
        return finding

    def error(self, cancer: str, check: str, message: str, hint: str | None = None) -> Finding:
        return self.add(cancer, check, Level.ERROR, message, hint)

    def warn(self, cancer: str, check: str, message: str, hint: str | None = None) -> Finding:
        return self.add(cancer, check, Level.WARNING, message, hint)

    def passed(self, cancer: str, check: str, message: str) -> Finding:
        return self.add(cancer, check, Level.OK, message)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level is Level.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level is Level.WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def checks_failed(self, check: str, cancer: str | None = None) -> list[Finding]:
        """Errors of one check (tests and scripts)."""
        return [f for f in self.errors if f.check == check and (cancer is None or f.cancer == cancer)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "encoder": self.encoder,
            "deep": self.deep,
            "ok": self.ok,
            "counts": {"errors": len(self.errors), "warnings": len(self.warnings)},
            "cancers": {name: asdict(counts) for name, counts in self.counts.items()},
            "findings": [f.to_dict() for f in self.findings],
        }
