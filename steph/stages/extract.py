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
from typing import TYPE_CHECKING, Any

from ..progress import NULL_PROGRESS, Progress
from ..units import WorkUnit
from .base import Stage, unit_runner

if TYPE_CHECKING:
    from ..config.project import Project
    from ..report import StageReport

NAME = "extract"


@dataclass(frozen=True)
class ShardUnit(WorkUnit):
    """A shard of slides: done when every feature file of it is *complete* (its completeness flag
    set and row counts agreeing, :func:`~steph.extraction.h5format.is_complete`), as extract itself
    decides; a truncated or half-written file is not done."""

    @property
    def done(self) -> bool:
        from ..extraction.h5format import is_complete

        return bool(self.outputs) and all(is_complete(path) for path in self.outputs)


@dataclass(frozen=True)
class ExtractSelection:
    """Which slides to extract.

    Attributes:
        cancers: Only slides of these cancers (default: every slide of the manifest).
        slides_file: A manifest-format CSV used instead of slides/manifest.csv, or a list of
            slide ids of the manifest.
        num_shards: Split the slides into this many shards (default: ``$SLURM_ARRAY_TASK_COUNT``
            for a run; ``slurm.slides_per_task`` for a task list).
        shard_index: Process this shard only (a run; a task list has one unit per shard).
    """

    cancers: list[str] | None = None
    slides_file: Path | None = None
    num_shards: int | None = None
    shard_index: int | None = None


def plan(project: Project, selection: ExtractSelection) -> list[WorkUnit]:
    """One unit per shard; its outputs are the feature files of the shard's slides."""
    from ..hpc.shards import default_num_shards
    from ..pipeline.extract import select_slides
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
        params = {
            "num_shards": n,
            "shard_index": i,
            "cancers": list(cancers) if cancers else None,
            "slides_file": str(slides_file) if slides_file else None,
            "slides": len(members),
        }
        units.append(ShardUnit(NAME, f"shard_{i}_of_{n}", outputs, params))
    return units


def pins(units: Sequence[WorkUnit]) -> list[str]:
    """``--num-shards N`` for the array's command line (nothing for an empty list)."""
    return ["--num-shards", str(units[0].params["num_shards"])] if units else []


def run(
    project: Project,
    selection: ExtractSelection,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    devices: Sequence[str] | None = None,
    **options: Any,
) -> StageReport:
    """Extract the selection; with ``devices``, over one worker process per device."""
    chosen = {
        "cancers": selection.cancers,
        "slides_file": selection.slides_file,
        "num_shards": selection.num_shards,
        "shard_index": selection.shard_index,
    }
    if devices:
        from ..hpc.multi_device import extract_on_devices

        return extract_on_devices(
            project.layout, project.config, devices, overwrite=overwrite, progress=progress, **chosen
        )
    from ..pipeline.extract import extract_features

    return extract_features(project.layout, project.config, overwrite=overwrite, progress=progress, **chosen)


def _unit_selection(unit: WorkUnit) -> ExtractSelection:
    """One shard."""
    p = unit.params
    return ExtractSelection(
        cancers=p.get("cancers"),
        slides_file=Path(p["slides_file"]) if p.get("slides_file") else None,
        num_shards=p["num_shards"],
        shard_index=p["shard_index"],
    )


def lock_roots(project: Project) -> list[Path]:
    return [project.layout.features_dir(project.config.encoder)]


STAGE: Stage[ExtractSelection] = Stage(
    name=NAME,
    order=10,
    selection=ExtractSelection,
    plan=plan,
    run=run,
    run_unit=unit_runner(run, _unit_selection),
    lock_roots=lock_roots,
    pins=pins,
)
