"""Stage ``extract``: slides to patch-feature files (:mod:`steph.pipeline.extract`).

Its unit of work for a Slurm array is a *shard*: shard ``i`` of ``N`` is exactly what
``stephctl extract --num-shards N --shard-index i`` processes (the selected slides sorted by
``slide_id``, every ``N``-th one; :mod:`steph.slides.manifest`). ``N`` is ``--num-shards`` when
given, else ``ceil(slides / slurm.slides_per_task)`` (100 slides per task by default), never more
than the number of slides. A generated array pins ``--num-shards N`` on every task's command line,
so the shards stay the same while the array runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..progress import NULL_PROGRESS, Progress
from ..report import StageReport
from ..units import WorkUnit
from .base import Stage, Survey

if TYPE_CHECKING:
    from ..config.project import Project

NAME = "extract"


@dataclass(frozen=True)
class ExtractSelection:
    """Which slides to extract.

    Attributes:
        cancers: Only slides of these cancers (default: every slide of the manifest).
        slides_file: A manifest-format CSV used instead of slides/manifest.csv, or a list of
            slide ids of the manifest.
        num_shards: Split the slides into this many shards (default: one for a run;
            ``ceil(slides / slurm.slides_per_task)`` for a task list).
        shard_index: Process this shard only (a run, with ``num_shards``; a task list has one
            unit per shard, and a task index or ``$SLURM_ARRAY_TASK_ID`` picks one of them).
    """

    cancers: list[str] | None = None
    slides_file: Path | None = None
    num_shards: int | None = None
    shard_index: int | None = None


@dataclass(frozen=True)
class ShardUnit(WorkUnit):
    """Shard ``shard_index`` of ``num_shards`` of the selected slides (``slides`` of them). It is
    done when every feature file of it is *complete* (its completeness flag set and row counts
    agreeing, :func:`~steph.extraction.h5format.is_complete`), as extract itself decides; a
    truncated or half-written file is not done."""

    num_shards: int = 1
    shard_index: int = 0
    cancers: list[str] | None = None
    slides_file: str | None = None
    slides: int = 0

    @property
    def done(self) -> bool:
        from ..extraction.h5format import is_complete

        return bool(self.outputs) and all(is_complete(path) for path in self.outputs)


def plan(project: Project, selection: ExtractSelection) -> list[ShardUnit]:
    """One unit per shard; its outputs are the feature files of the shard's slides."""
    from ..pipeline.extract import select_slides
    from ..pipeline.shards import default_num_shards
    from ..slides.manifest import shard

    layout, config = project.layout, project.config
    cancers, slides_file = selection.cancers, selection.slides_file
    entries = select_slides(
        layout, cancers=cancers, slides_file=slides_file, num_shards=1, shard_index=0
    ).entries
    n = selection.num_shards or min(
        default_num_shards(len(entries), config.slurm.slides_per_task), max(1, len(entries))
    )
    units = []
    for i in range(n):
        members = shard(entries, n, i)
        outputs = tuple(layout.own_features(config.encoder, e.slide_id) for e in members if e.problem is None)
        units.append(
            ShardUnit(
                NAME,
                f"shard_{i}_of_{n}",
                outputs,
                num_shards=n,
                shard_index=i,
                cancers=list(cancers) if cancers else None,
                slides_file=str(slides_file) if slides_file else None,
                slides=len(members),
            )
        )
    return units


def pins(units: Sequence[ShardUnit]) -> list[str]:
    """``--num-shards N`` for the array's command line (nothing for an empty list)."""
    return ["--num-shards", str(units[0].num_shards)] if units else []


def run(
    project: Project,
    selection: ExtractSelection,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    devices: Sequence[str] = (),
) -> StageReport:
    """Extract the selection: shard ``shard_index`` of ``num_shards`` (both or neither), else
    every slide (one shard), through :func:`run_units` on that unit of the plan. (In a Slurm
    array the task id picks the unit instead: :meth:`Stage.run_task`.)"""
    from dataclasses import replace

    from ..slides.manifest import resolve_shard

    n, i = resolve_shard(selection.num_shards, selection.shard_index)
    units = plan(project, replace(selection, num_shards=n, shard_index=None))
    return run_units(project, units[i : i + 1], overwrite=overwrite, progress=progress, devices=devices)


def run_units(
    project: Project,
    units: Sequence[ShardUnit],
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    named: bool = True,
    devices: Sequence[str] = (),
) -> StageReport:
    """Extract the shards ``units`` one after the other, each slide a unit of the one unit loop
    (:func:`steph.units.run_units`, under its own lock; with ``devices``, over one worker
    process per device); the report has one item per slide, its outputs are those of the last
    shard (patch counts summed)."""
    reports = [
        _run_shard(project, unit, overwrite=overwrite, progress=progress, devices=devices) for unit in units
    ]
    if len(reports) == 1:
        return reports[0]
    report = StageReport(NAME)
    for part in reports:
        report.items.extend(part.items)
        report.outputs.update(part.outputs)
    if reports:
        report.outputs["shard"] = ", ".join(str(part.outputs.get("shard")) for part in reports)
        report.outputs["patches"] = sum(int(part.outputs.get("patches", 0)) for part in reports)
    return report


def _run_shard(
    project: Project, unit: ShardUnit, *, overwrite: bool, progress: Progress, devices: Sequence[str]
) -> StageReport:
    layout, config = project.layout, project.config
    cancers = unit.cancers
    slides_file = Path(unit.slides_file) if unit.slides_file else None
    if devices:
        from ..pipeline.extract_devices import extract_on_devices

        return extract_on_devices(
            layout,
            config,
            devices,
            cancers=cancers,
            slides_file=slides_file,
            num_shards=unit.num_shards,
            shard_index=unit.shard_index,
            overwrite=overwrite,
            progress=progress,
        )
    from ..pipeline.extract import extract_features

    return extract_features(
        layout,
        config,
        cancers=cancers,
        slides_file=slides_file,
        num_shards=unit.num_shards,
        shard_index=unit.shard_index,
        overwrite=overwrite,
        progress=progress,
    )


def lock_roots(project: Project) -> list[Path]:
    return [project.layout.features_dir(project.config.encoder)]


def survey(project: Project) -> Survey:
    """``features`` per cancer (evaluation-only cancers too): every slide of
    ``labels/<CANCER>.csv`` with a feature file (through ``paths.features`` when set, so an
    external download counts; feature stores: ``{project}`` templates, keys inside an LMDB, see
    :mod:`steph.data.stores`).

    A file in extract's own folder (``features/<encoder>/<slide>.h5``) is opened: an unreadable
    one (truncated) or one that extract began but did not finish (its completeness flag unset,
    or row counts that disagree) is missing and named in a note; extract redoes exactly those.
    Files without extract's flag (copied in from another tool) and files elsewhere
    (``paths.features``) count when present; a note says that ``stephctl check`` reads them.
    """
    from ..data.bags import missing_slides, slide_refs
    from ..data.cohort import load_cohort
    from ..errors import StephError

    layout, config = project.layout, project.config
    row = Survey("features")
    cancers = project.cancers
    cancers = [*cancers, *(c for c in config.evaluation_only if c not in cancers)]
    if not cancers:
        row.errors.append(f"no cancers: set cancers: in {layout.config_file} or add labels/<CANCER>.csv")
    incomplete: list[str] = []
    external = 0
    for cancer in cancers:
        try:
            cohort = load_cohort(layout, config, cancer)
            slides = slide_refs(layout, config, cohort, list(cohort.patients))
            refs = [ref for refs in slides.values() for ref in refs]
            absent = {(ref.path, ref.key) for ref in missing_slides(refs)}
        except StephError as exc:
            row.errors.append(f"{cancer}: {exc.message}")
            continue
        for ref in refs:
            present = (ref.path, ref.key) not in absent
            own = ref.key is None and ref.path == layout.own_features(config.encoder, ref.slide_id)
            if present and own and _unfinished(ref.path):
                incomplete.append(ref.slide_id)
                present = False
            elif present and not own:
                external += 1
            row.units.append((cancer, WorkUnit("features", ref.slide_id, (ref.path,) if present else ())))
    if incomplete:
        shown = ", ".join(incomplete[:MAX_NOTED]) + (" ..." if len(incomplete) > MAX_NOTED else "")
        row.notes.append(
            f"{len(incomplete)} feature file(s) exist but are incomplete or unreadable ({shown}): "
            "`stephctl extract` redoes them"
        )
    if external:
        row.notes.append(
            f"{external} feature file(s) outside features/{config.encoder}/ are counted when present; "
            "`stephctl check` reads every one"
        )
    return row


MAX_NOTED = 20
"""Slides named in a note of the status row."""


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


STAGE: Stage[ExtractSelection, ShardUnit] = Stage(
    name=NAME,
    order=10,
    selection=ExtractSelection,
    plan=plan,
    run_units=run_units,
    lock_roots=lock_roots,
    pins=pins,
    run_selection=run,
    survey=survey,
)
