"""Reading patches back from the slide and the montage of the most and least attended ones.

A patch is read exactly as extraction read it: from the level with the largest downsample
``d <= patch_size_level0 / patch_size``, ``round(patch_size_level0 / d)`` level pixels wide,
resized to ``patch_size`` pixels (the extraction resolution).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from ..fileio import atomic_path
from ..slides.reader import Slide

DPI = 110
MAX_TILE_PX = 256
"""Montage tiles larger than this (e.g. 512-px patches) are shown downscaled."""


def read_patch(slide: Slide, x: int, y: int, patch_size_level0: int, patch_size: int) -> np.ndarray:
    """RGB ``[patch_size, patch_size, 3]`` of the patch at level-0 ``(x, y)`` (see module docstring).

    Raises:
        SlideError: the region cannot be decoded.
    """
    level = slide.best_level(patch_size_level0 / patch_size)
    read = max(1, round(patch_size_level0 / slide.level_downsamples[level]))
    region = slide.read_rgb(int(x), int(y), level, (read, read))
    if read != patch_size:
        region = np.asarray(Image.fromarray(region).resize((patch_size, patch_size), Image.Resampling.BOX))
    return region


@dataclass(frozen=True)
class Tile:
    """One montage tile: the patch pixels and its caption facts."""

    image: np.ndarray
    label: str
    """Which slide (shown above the tile; empty for a patient with one slide)."""
    x: int
    y: int
    attention: float
    percentile: float


def draw_montage(
    path: Path, *, title: str, top: Sequence[Tile], bottom: Sequence[Tile], note: str = ""
) -> Path:
    """Two rows: the most attended patches (left = highest) and the least attended (left = lowest)."""
    columns = max(len(top), len(bottom), 1)
    fig = Figure(figsize=(1.75 * columns + 0.4, 4.5), layout="constrained")
    axes = fig.subplots(2, columns, squeeze=False)
    for row, (tiles, label, colour) in enumerate(
        ((top, "most attended", "#b2182b"), (bottom, "least attended", "#2166ac"))
    ):
        for col in range(columns):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(tiles):
                ax.set_axis_off()
                continue
            tile = tiles[col]
            image = tile.image
            if image.shape[0] > MAX_TILE_PX:
                image = np.asarray(Image.fromarray(image).resize((MAX_TILE_PX, MAX_TILE_PX)))
            ax.imshow(image, interpolation="nearest")
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(2.5)
            ax.set_title(
                (f"{tile.label}\n" if tile.label else "") + f"({tile.x}, {tile.y})\n"
                f"a={tile.attention:.3g} q={100 * tile.percentile:.0f}",
                fontsize=6.5,
            )
            if col == 0:
                ax.set_ylabel(label, fontsize=9, color=colour)
    fig.suptitle(
        title
        + "\n(x, y) = level-0 top-left corner; a = attention, q = percentile within the patient"
        + (f"\n{note}" if note else ""),
        fontsize=9,
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path
