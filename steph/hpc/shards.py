"""The extract task list: shards of the selected slides, and per-worker slide lists.

Extract's unit of work for a Slurm array is a *shard*: shard ``i`` of ``N`` is exactly what
``stephctl extract --num-shards N --shard-index i`` processes (the selected slides sorted by
``slide_id``, every ``N``-th one; :mod:`steph.slides.manifest`). ``N`` is ``--num-shards`` when
given, else ``ceil(slides / slurm.slides_per_task)`` (100 slides per task by default), never more
than the number of slides. The generated array pins ``--num-shards N`` on every task's command
line, so the shards stay the same while the array runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fileio import read_csv, write_csv
from ..units import WorkUnit

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

STAGE = "extract"


def default_num_shards(n_slides: int, slides_per_task: int) -> int:
    """``ceil(n_slides / slides_per_task)``, at least 1.

    >>> default_num_shards(250, 100), default_num_shards(0, 100)
    (3, 1)
    """
    return max(1, math.ceil(n_slides / max(1, slides_per_task)))


def plan_extract_shards(
    layout: ProjectLayout, config: ProjectConfig, selection: dict[str, Any]
) -> list[WorkUnit]:
    """One unit per shard; its outputs are the feature files of the shard's slides.

    ``selection`` holds extract's ``cancers``, ``slides_file`` and optionally ``num_shards``.
    """
    from ..pipeline.extract import select_slides
    from ..slides.manifest import shard

    cancers, slides_file = selection.get("cancers"), selection.get("slides_file")
    entries = select_slides(
        layout, cancers=cancers, slides_file=slides_file, num_shards=1, shard_index=0
    ).entries
    n = selection.get("num_shards") or min(
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
        units.append(WorkUnit(STAGE, f"shard_{i}_of_{n}", outputs, params))
    return units


def shard_pins(units: Sequence[WorkUnit]) -> list[str]:
    """``--num-shards N`` for the array's command line (nothing for an empty list)."""
    return ["--num-shards", str(units[0].params["num_shards"])] if units else []


def selected_slides(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: Sequence[str] | None = None,
    slides_file: Path | None = None,
    num_shards: int | None = None,
    shard_index: int | None = None,
) -> list[str]:
    """Slide ids extract would process for this selection (the same shard rules, Slurm variables included)."""
    from ..pipeline.extract import select_slides

    chosen = select_slides(
        layout,
        cancers=list(cancers) if cancers else None,
        slides_file=slides_file,
        num_shards=num_shards,
        shard_index=shard_index,
    )
    return [entry.slide_id for entry in chosen.entries]


def write_share(path: Path, slide_ids: Sequence[str], slides_file: Path | None) -> Path:
    """Write one worker's slides as an extract ``--slides`` file.

    When the run's slides come from a manifest-format CSV other than slides/manifest.csv, the
    worker gets that CSV's rows for its slides (so paths and MPP travel with them); otherwise a
    plain list of slide ids, looked up in the project's manifest.
    """
    from ..slides.manifest import read_selection

    if slides_file is not None and read_selection(Path(slides_file)) is None:
        rows = read_csv(slides_file)
        wanted = set(slide_ids)
        header = list(rows[0]) if rows else ["slide_id", "patient_id", "cancer", "path"]
        return write_csv(path, header, [r for r in rows if r.get("slide_id") in wanted])
    path.write_text("".join(f"{sid}\n" for sid in slide_ids), encoding="utf-8")
    return path
