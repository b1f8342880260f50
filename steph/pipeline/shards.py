"""Shards of extract's slides: how many per array, and per-worker slide lists (``--devices``).

The extract task list itself (one unit per shard) is :func:`steph.stages.extract.plan`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..fileio import read_csv, write_csv

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout


def default_num_shards(n_slides: int, slides_per_task: int) -> int:
    """``ceil(n_slides / slides_per_task)``, at least 1.

    >>> default_num_shards(250, 100), default_num_shards(0, 100)
    (3, 1)
    """
    return max(1, math.ceil(n_slides / max(1, slides_per_task)))


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
    from .extract import select_slides

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
