"""A PNG thumbnail of the slide with the kept patch grid drawn on it, for a person to check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..fileio import atomic_path
from ..slides.grid import PatchGrid

GRID_COLOUR = (0, 170, 0)
MASK_TINT = (0, 90, 255)


def save_grid_thumbnail(
    path: Path, thumbnail: np.ndarray, tissue: np.ndarray, grid: PatchGrid | None, dimensions: tuple[int, int]
) -> Path:
    """Write ``thumbnail`` (RGB ``[h, w, 3]``) with the tissue mask tinted blue and every kept
    patch of ``grid`` outlined in green; ``grid`` None draws the mask only (a slide without patches)."""
    image = thumbnail.astype(np.float32)
    tint = np.array(MASK_TINT, dtype=np.float32)
    image[tissue] = 0.8 * image[tissue] + 0.2 * tint
    canvas = Image.fromarray(image.round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    sx = canvas.width / dimensions[0]
    sy = canvas.height / dimensions[1]
    side = grid.patch_size_level0 if grid is not None else 0
    for x, y in grid.coords if grid is not None else ():
        box = (x * sx, y * sy, (x + side) * sx - 1, (y + side) * sy - 1)
        draw.rectangle(box, outline=GRID_COLOUR, width=1)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
