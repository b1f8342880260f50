"""``stephctl status``: what exists and what is missing, stage by stage.

There is one row per registered stage, plugins included (:meth:`steph.stages.Stage.status`):
by default the units of the same plan the stage and Slurm arrays use, so "done" here means
exactly what a rerun would skip. The built-in rows:

- **features** (extract's row) per cancer: every slide of ``labels/<CANCER>.csv`` with a feature file (through
  ``paths.features`` when set, so an external download counts; evaluation-only cancers too);
- **train-source** and **task-vector** per cancer x fold of the split files;
- **merge** per target (``targets:``, else every cancer) x fold for ``merge.method``, plus every other run found under
  ``merged/`` or ``results/`` (runs made with CLI flags such as ``--method ties``);
- **transfer** per target (evaluation-only cancers included);
- **results**: the test C-index of every (target, method) over the folds whose record exists
  (a fold killed before its ``meta.json`` does not count), and whether ``results/summary.csv``
  exists.

It also lists failures recorded by earlier runs (extract's ``failures.csv``), lock files (held
by a live process, or *stale*: dead pid on this host or older than the age limit; each with the
stage whose ``--clear-stale-locks`` removes it) and leftover temporary files of killed writers. A stage that cannot be planned (no labels, no splits, a merge
setting that cannot work) is reported with the reason instead of counts.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from ..fileio import TMP_PREFIX, read_csv
from ..locks import LOCK_SUFFIX, read_lock
from ..records import MetricsRecord

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..config.project import Project
    from ..layout import ProjectLayout
    from ..stages.base import Survey
    from ..units import WorkUnit

MAX_LISTED = 20
"""Missing keys listed per stage (the counts are always complete)."""


@dataclass
class StageStatus:
    """Done and missing units of one stage, overall and per group (cancer or target)."""

    stage: str
    total: int = 0
    done: int = 0
    groups: dict[str, list[int]] = field(default_factory=dict)
    """Group -> [done, total]."""
    missing: list[str] = field(default_factory=list)
    """Keys of units not done (at most :data:`MAX_LISTED`)."""
    errors: list[str] = field(default_factory=list)
    """Why (part of) the stage could not be planned."""
    notes: list[str] = field(default_factory=list)
    """What the counts cannot say (feature files present but incomplete; files only ``check`` reads)."""

    def add(self, group: str, unit: WorkUnit) -> None:
        counts = self.groups.setdefault(group, [0, 0])
        counts[1] += 1
        self.total += 1
        if unit.done:
            counts[0] += 1
            self.done += 1
        elif len(self.missing) < MAX_LISTED:
            self.missing.append(unit.key)

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.done == self.total and not self.errors


@dataclass
class LockState:
    path: str
    host: str
    pid: int
    age_hours: float
    stale: bool
    stage: str | None = None
    """The stage whose ``--clear-stale-locks`` removes it (None: not under a stage's folders)."""


@dataclass
class ProjectStatus:
    """Everything ``stephctl status`` reports."""

    root: str
    encoder: str
    stages: list[StageStatus]
    results: list[dict[str, Any]]
    summary_csv: str | None
    failures: list[dict[str, str]]
    locks: list[LockState]
    temp_files: list[str]

    def stage(self, name: str) -> StageStatus:
        return next(s for s in self.stages if s.stage == name)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for entry in out["stages"]:
            entry["complete"] = self.stage(entry["stage"]).complete
        return out


def project_status(layout: ProjectLayout, config: ProjectConfig) -> ProjectStatus:
    """Survey the project at ``layout`` (reads only; never writes or removes anything)."""
    from ..config.project import Project
    from ..stages import stages

    project = Project(layout, config)
    rows = []
    for stage in stages():
        survey = stage.status(project)
        if survey is not None:
            rows.append(_row(survey))
    locks, temps = _scan(layout.root)
    for lock in locks:
        lock.stage = lock_stage(project, Path(lock.path))
    return ProjectStatus(
        root=str(layout.root),
        encoder=config.encoder,
        stages=rows,
        results=_results(layout),
        summary_csv=str(layout.summary) if layout.summary.is_file() else None,
        failures=_failures(layout, config),
        locks=locks,
        temp_files=temps,
    )


def _row(survey: Survey) -> StageStatus:
    status = StageStatus(survey.row)
    for group, unit in survey.units:
        status.add(group, unit)
    status.errors.extend(survey.errors)
    status.notes.extend(survey.notes)
    return status


def lock_stage(project: Project, path: Path) -> str | None:
    """The stage whose ``--clear-stale-locks`` removes the lock at ``path``: of the registered
    stages whose lock folders hold it, the one with the innermost folder, the later stage on a
    tie (``results/`` holds evaluate's summary lock; earlier stages only keep temporary files
    there)."""
    from ..stages import stages

    best: tuple[int, int, str] | None = None
    for stage in stages():
        for root in stage.lock_roots(project):
            if path.is_relative_to(root):
                rank = (len(root.parts), stage.order, stage.name)
                best = rank if best is None or rank[:2] > best[:2] else best
    return best[2] if best else None


def _results(layout: ProjectLayout) -> list[dict[str, Any]]:
    """Per (target, method): folds with metrics.json and their mean test C-index."""
    rows = []
    for target in layout.result_targets():
        for method in layout.result_methods(target):
            folds, values = [], []
            for fold in layout.result_folds(target, method):
                path = layout.result_metrics(target, method, fold)
                if not path.is_file() or not layout.result_record(target, method, fold).is_file():
                    continue  # unfinished: its record is written last
                folds.append(fold)
                try:
                    value = MetricsRecord.read(path).c_index
                except (OSError, DataError):
                    value = None
                if value is not None:
                    values.append(float(value))
            if folds:
                mean = round(sum(values) / len(values), 4) if values else None
                rows.append({"target": target, "method": method, "folds": folds, "c_index_mean": mean})
    return rows


def _failures(layout: ProjectLayout, config: ProjectConfig) -> list[dict[str, str]]:
    path = layout.extract_failures(config.encoder)
    if not path.is_file():
        return []
    try:
        rows = read_csv(path)
    except (OSError, ValueError) as exc:
        return [{"stage": "extract", "key": "", "error": f"{path} unreadable: {exc}", "file": str(path)}]
    return [
        {"stage": "extract", "key": r.get("slide_id", ""), "error": r.get("error", ""), "file": str(path)}
        for r in rows
    ]


def _scan(root: Path) -> tuple[list[LockState], list[str]]:
    """Lock files and leftover temporary files anywhere under the project (one walk)."""
    locks: list[LockState] = []
    temps: list[str] = []
    for folder, dirs, files in os.walk(root):
        temps.extend(str(Path(folder) / d) for d in dirs if d.startswith(TMP_PREFIX))
        dirs[:] = [d for d in dirs if not d.startswith(TMP_PREFIX)]
        for name in files:
            path = Path(folder) / name
            if name.endswith(LOCK_SUFFIX):
                info = read_lock(path)
                if info is not None:
                    stale = info.is_stale()
                    locks.append(LockState(str(path), info.host, info.pid, round(info.age_hours, 3), stale))
            elif name.startswith(TMP_PREFIX):
                temps.append(str(path))
    return sorted(locks, key=lambda lock: lock.path), sorted(temps)
