"""``stephctl status``: what exists and what is missing, stage by stage.

The expected units come from the same plans the stages and Slurm arrays use
(:mod:`steph.stages`), so "done" here means exactly what a rerun would skip:

- **features** per cancer: every slide of ``labels/<CANCER>.csv`` with a feature file (through
  ``paths.features`` when set, so an external download counts);
- **train-source** and **task-vector** per cancer x fold of the split files;
- **merge** per target (``targets:``, else every cancer) x fold for ``merge.method``, plus every other run found under
  ``merged/`` or ``results/`` (runs made with CLI flags such as ``--method ties``);
- **transfer** per target (evaluation-only cancers included: their features are counted too);
- **results**: the test C-index of every (target, method) over the folds whose record exists
  (a fold killed before its ``meta.json`` does not count), and whether ``results/summary.csv``
  exists.

It also lists failures recorded by earlier runs (extract's ``failures.csv``), lock files (held
by a live process, or *stale*: dead pid on this host or older than the age limit; each with the
stage whose ``--clear-stale-locks`` removes it) and leftover temporary files of killed writers. A stage that cannot be planned (no labels, no splits, a merge
setting that cannot work) is reported with the reason instead of counts.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StephError
from ..fileio import TMP_PREFIX, read_csv
from ..locks import LOCK_SUFFIX, read_lock

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..config.project import Project
    from ..layout import ProjectLayout
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

    def add(self, units: list[WorkUnit], group_of: Any) -> None:
        for unit in units:
            group = self.groups.setdefault(str(group_of(unit)), [0, 0])
            group[1] += 1
            self.total += 1
            if unit.done:
                group[0] += 1
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
    from ..stages import TaskVectorSelection, TrainSourceSelection, TransferSelection

    project = Project(layout, config)
    cancers = project.cancers
    rare = [c for c in config.evaluation_only if c not in cancers]
    stages = [
        _features(layout, config, [*cancers, *rare]),
        _planned(project, TrainSourceSelection(cancers=cancers or None)),
        _planned(project, TaskVectorSelection(cancers=cancers or None)),
        _merges(project),
        _planned(project, TransferSelection()),
    ]
    locks, temps = _scan(layout.root)
    for lock in locks:
        lock.stage = lock_stage(layout, Path(lock.path))
    return ProjectStatus(
        root=str(layout.root),
        encoder=config.encoder,
        stages=stages,
        results=_results(layout),
        summary_csv=str(layout.summary) if layout.summary.is_file() else None,
        failures=_failures(layout, config),
        locks=locks,
        temp_files=temps,
    )


def lock_stage(layout: ProjectLayout, path: Path) -> str | None:
    """The stage that owns the lock at ``path`` (by the folder it lies in)."""
    roots = [
        (layout.models_root, "train-source"),
        (layout.task_vectors_root, "task-vector"),
        (layout.merged_root, "merge"),
        (layout.results_root, "evaluate"),
        (layout.reports_root, "evaluate"),
        (layout.transfer_root, "transfer"),
        (layout.features_root, "extract"),
        (layout.theta0.parent, "train-source"),
    ]
    for root, stage in roots:
        if path.is_relative_to(root):
            return stage
    return None


def _group(unit: WorkUnit) -> str:
    return unit.key.split("/", 1)[0]


def _planned(project: Project, selection: object) -> StageStatus:
    from ..stages import stage_of

    stage = stage_of(selection)
    status = StageStatus(stage.name)
    try:
        status.add(stage.plan(project, selection), _group)
    except StephError as exc:
        status.errors.append(exc.message)
    return status


def _features(layout: ProjectLayout, config: ProjectConfig, cancers: list[str]) -> StageStatus:
    """Slides named in each cancer's labels that have a feature file.

    A file in extract's own folder (``features/<encoder>/<slide>.h5``) is opened: an unreadable
    one (truncated) or one that extract began but did not finish (its completeness flag unset,
    or row counts that disagree) is missing and named in a note; extract redoes exactly those.
    Files without extract's flag (copied in from another tool) and files elsewhere
    (``paths.features``) count when present; a note says that ``stephctl check`` reads them.
    """
    from ..data.bags import missing_slides, slide_refs
    from ..data.cohort import load_cohort
    from ..units import WorkUnit

    status = StageStatus("features")
    if not cancers:
        status.errors.append(f"no cancers: set cancers: in {layout.config_file} or add labels/<CANCER>.csv")
    incomplete: list[str] = []
    external = 0
    for cancer in cancers:
        try:  # feature stores: {project} templates, keys inside an LMDB (see steph.data.stores)
            cohort = load_cohort(layout, config, cancer)
            slides = slide_refs(layout, config, cohort, list(cohort.patients))
            refs = [ref for refs in slides.values() for ref in refs]
            absent = {(ref.path, ref.key) for ref in missing_slides(refs)}
        except StephError as exc:
            status.errors.append(f"{cancer}: {exc.message}")
            continue
        units = []
        for ref in refs:
            present = (ref.path, ref.key) not in absent
            own = ref.key is None and ref.path == layout.own_features(config.encoder, ref.slide_id)
            if present and own and _unfinished(ref.path):
                incomplete.append(ref.slide_id)
                present = False
            elif present and not own:
                external += 1
            units.append(
                WorkUnit("features", ref.slide_id, (ref.path,) if present else (), {"cancer": cancer})
            )
        status.add(units, lambda unit: unit.params["cancer"])
    if incomplete:
        shown = ", ".join(incomplete[:MAX_LISTED]) + (" ..." if len(incomplete) > MAX_LISTED else "")
        status.notes.append(
            f"{len(incomplete)} feature file(s) exist but are incomplete or unreadable ({shown}): "
            "`stephctl extract` redoes them"
        )
    if external:
        status.notes.append(
            f"{external} feature file(s) outside features/{config.encoder}/ are counted when present; "
            "`stephctl check` reads every one"
        )
    return status


def _unfinished(path: Path) -> bool:
    """An HDF5 feature file that cannot be opened, or that extract started and did not finish
    (``complete`` attribute not 1, or row counts that disagree with ``n_patches``; the test of
    :func:`~steph.extraction.h5format.is_complete`, in the same single open)."""
    import h5py

    if path.suffix not in (".h5", ".hdf5"):
        return False
    try:
        with h5py.File(path, "r") as handle:
            if "complete" not in handle.attrs:
                return False  # not written by extract (another tool's file): counted when present
            if int(handle.attrs["complete"]) != 1:
                return True
            n = int(handle.attrs.get("n_patches", -1))
            return not (handle["features"].shape[0] == n and handle["coords"].shape[0] == n)
    except (OSError, KeyError, ValueError, TypeError):
        return True


def _merges(project: Project) -> StageStatus:
    """Per target: the folds of ``merge.method`` and of every other run found under
    ``merged/`` or ``results/`` (runs made with CLI flags: other methods, options)."""
    from ..layout import CANCER_SPECIFIC
    from ..stages import MergeSelection, get_stage
    from ..units import WorkUnit

    layout = project.layout
    status = StageStatus("merge")
    for target in project.targets:
        planned: list[WorkUnit] = []
        try:
            planned = get_stage("merge").plan(project, MergeSelection(target=target))
            status.add(planned, _group)
        except StephError as exc:
            status.errors.append(f"{target}: {exc.message}")
        runs = {u.params.get("run") for u in planned}
        found = set(layout.result_methods(target)) | set(_merged_runs(layout, target))
        folds = layout.split_folds(target)
        for run in sorted(found - runs - {CANCER_SPECIFIC}):
            units = [
                WorkUnit("merge", f"{target}/{run}/fold_{k}", (layout.result_record(target, run, k),))
                for k in folds
            ]
            status.add(units, _group)
    return status


def _merged_runs(layout: ProjectLayout, target: str) -> list[str]:
    base = layout.merged_root / target
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


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
                    value = json.loads(path.read_text(encoding="utf-8")).get("c_index")
                except (OSError, ValueError, AttributeError):
                    value = None
                if isinstance(value, (int, float)):
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
