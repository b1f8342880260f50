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
BORDER, GAP, CAPTION = 4, 6, 40
ROW_COLOURS = ((178, 24, 43), (33, 102, 172))
MAX_TILE_PX = 192
"""Montage tiles larger than this are shown downscaled (about their size on the figure)."""


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


def _sheet(rows: Sequence[Sequence[Tile]], tile: int, columns: int) -> np.ndarray:
    """One RGB image: the tiles of each row side by side, framed in the row's colour."""
    cell_w, cell_h = tile + 2 * (BORDER + GAP), tile + 2 * (BORDER + GAP) + CAPTION
    sheet = np.full((cell_h * len(rows), cell_w * columns, 3), 255, dtype=np.uint8)
    for r, tiles in enumerate(rows):
        colour = np.array(ROW_COLOURS[r], dtype=np.uint8)
        for c, t in enumerate(tiles):
            image = t.image
            if image.shape[0] != tile:
                image = np.asarray(Image.fromarray(image).resize((tile, tile), Image.Resampling.BOX))
            y, x = r * cell_h + CAPTION + GAP, c * cell_w + GAP
            sheet[y : y + tile + 2 * BORDER, x : x + tile + 2 * BORDER] = colour
            sheet[y + BORDER : y + BORDER + tile, x + BORDER : x + BORDER + tile] = image[..., :3]
    return sheet


def draw_montage(
    path: Path, *, title: str, top: Sequence[Tile], bottom: Sequence[Tile], note: str = ""
) -> Path:
    """Two rows: the most attended patches (left = highest) and the least attended (left = lowest)."""
    columns = max(len(top), len(bottom), 1)
    sizes = [t.image.shape[0] for t in (*top, *bottom)]
    tile = min(MAX_TILE_PX, max(sizes, default=MAX_TILE_PX))
    cell_w, cell_h = tile + 2 * (BORDER + GAP), tile + 2 * (BORDER + GAP) + CAPTION
    sheet = _sheet((top, bottom), tile, columns)
    width = 1.75 * columns + 0.9
    fig = Figure(figsize=(width, (width - 0.9) * sheet.shape[0] / sheet.shape[1] + 1.0), layout="constrained")
    ax = fig.subplots()
    ax.imshow(sheet, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks(
        [cell_h * 0.5 + CAPTION / 2, cell_h * 1.5 + CAPTION / 2], ["most\nattended", "least\nattended"]
    )
    for label, (red, green, blue) in zip(ax.get_yticklabels(), ROW_COLOURS, strict=True):
        label.set_color((red / 255.0, green / 255.0, blue / 255.0))
    for spine in ax.spines.values():
        spine.set_visible(False)
    for r, tiles in enumerate((top, bottom)):
        for c, t in enumerate(tiles):
            text = (
                f"{t.label} " if t.label else ""
            ) + f"({t.x}, {t.y})\na={t.attention:.3g} q={100 * t.percentile:.0f}"
            ax.text(
                c * cell_w + cell_w / 2, r * cell_h + CAPTION, text, ha="center", va="bottom", fontsize=6.5
            )
    fig.suptitle(
        title
        + "\n(x, y) = level-0 top-left corner; a = attention, q = percentile within the patient"
        + (f"\n{note}" if note else ""),
        fontsize=9,
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path
