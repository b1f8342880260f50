"""The patch grid at a target resolution, and the tissue fraction of every patch.

A patch is ``patch_size`` pixels at ``target_mpp``, i.e. ``patch_size * target_mpp`` microns
wide. On level 0 that is ``patch_size_level0 = round(patch_size * target_mpp / slide_mpp)``
pixels, so a 40x (0.25 mpp) and a 20x (0.5 mpp) scan of the same tissue get patches of the same
physical size (512 and 256 level-0 pixels for 256 px at 0.5 mpp). The grid starts at the
level-0 origin with stride ``patch_size_level0`` and contains only whole patches. Patches are
read from the level with the largest downsample ``d <= patch_size_level0 / patch_size``
(``read_size = round(patch_size_level0 / d)`` level pixels) and resized to ``patch_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import SlideError

_LEVEL_TOLERANCE = 1e-3


def best_level(level_downsamples: Sequence[float], downsample: float) -> int:
    """The level with the largest downsample that is still ``<= downsample`` (within 0.1 %, as
    scanners store e.g. 4.0003), level 0 if none.

    >>> best_level((1.0, 4.0003, 16.0), 8.0), best_level((1.0, 4.0), 0.5)
    (1, 0)
    """
    best = 0
    for level, factor in enumerate(level_downsamples):
        if factor <= downsample * (1 + _LEVEL_TOLERANCE) and factor >= level_downsamples[best]:
            best = level
    return best


@dataclass(frozen=True)
class PatchGrid:
    """Geometry of the patches of one slide; ``coords`` are level-0 top-left corners."""

    patch_size: int
    patch_size_level0: int
    target_mpp: float
    slide_mpp: float
    level: int
    level_downsample: float
    read_size: int
    coords: np.ndarray
    """``[N, 2]`` int64 level-0 ``(x, y)`` of the kept patches, row-major order."""
    tissue_fraction: np.ndarray
    """``[N]`` float32 fraction of each kept patch covered by tissue."""
    columns: int
    rows: int

    @property
    def n_patches(self) -> int:
        return int(self.coords.shape[0])


def level0_patch_size(patch_size: int, target_mpp: float, slide_mpp: float) -> int:
    """``round(patch_size * target_mpp / slide_mpp)``, at least 1.

    >>> level0_patch_size(256, 0.5, 0.25), level0_patch_size(256, 0.5, 0.5), level0_patch_size(224, 0.5, 0.2527)
    (512, 256, 443)
    """
    return max(1, round(patch_size * target_mpp / slide_mpp))


def box_fractions(
    mask: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray
) -> np.ndarray:
    """Exact mean of a mask over axis-aligned boxes with fractional mask-pixel bounds.

    The mask is treated as piecewise constant over unit pixels. Its integral
    ``F(y, x) = int_0^y int_0^x m`` is bilinear inside each pixel, so evaluating the summed-area
    table ``C[i, j] = sum_{r<i, c<j} m[r, c]`` by bilinear interpolation at fractional
    ``(y, x)`` gives ``F`` exactly, and a box mean is
    ``(F(y1, x1) - F(y0, x1) - F(y1, x0) + F(y0, x0)) / ((y1 - y0)(x1 - x0))``.
    Bounds are clipped to the mask.
    """
    h, w = mask.shape
    table = np.zeros((h + 1, w + 1), dtype=np.float64)
    table[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.float64), axis=0), axis=1)
    x0, x1 = np.clip(x0, 0, w), np.clip(x1, 0, w)
    y0, y1 = np.clip(y0, 0, h), np.clip(y1, 0, h)

    def integral(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        iy = np.minimum(np.floor(y).astype(np.int64), h - 1)
        ix = np.minimum(np.floor(x).astype(np.int64), w - 1)
        fy, fx = y - iy, x - ix
        top = table[iy, ix] * (1 - fx) + table[iy, ix + 1] * fx
        bottom = table[iy + 1, ix] * (1 - fx) + table[iy + 1, ix + 1] * fx
        out: np.ndarray = top * (1 - fy) + bottom * fy
        return out

    area = (y1 - y0) * (x1 - x0)
    total = integral(y1, x1) - integral(y0, x1) - integral(y1, x0) + integral(y0, x0)
    return np.where(area > 0, total / np.maximum(area, 1e-12), 0.0)


def make_grid(
    *,
    slide_id: str,
    dimensions: tuple[int, int],
    level_downsamples: tuple[float, ...],
    slide_mpp: float,
    target_mpp: float,
    patch_size: int,
    tissue: np.ndarray,
    min_tissue_fraction: float,
) -> PatchGrid:
    """The patches of a slide with at least ``min_tissue_fraction`` (and some) tissue.

    ``tissue`` is a boolean mask covering the whole level-0 extent ``dimensions`` at any
    resolution (each axis scaled independently).

    Raises:
        SlideError: the slide is smaller than one patch, or no patch has enough tissue.
    """
    width, height = dimensions
    ps0 = level0_patch_size(patch_size, target_mpp, slide_mpp)
    columns, rows = width // ps0, height // ps0
    if columns == 0 or rows == 0:
        raise SlideError(
            f"slide {slide_id}: {width}x{height} px is smaller than one patch "
            f"({ps0}x{ps0} level-0 px = {patch_size} px at {target_mpp} um/px; slide at {slide_mpp:.4g} um/px)",
            hint="check the slide's MPP, or lower extract.patch_size / extract.target_mpp",
        )
    gx, gy = np.meshgrid(np.arange(columns, dtype=np.int64) * ps0, np.arange(rows, dtype=np.int64) * ps0)
    xs, ys = gx.ravel(), gy.ravel()
    sx, sy = tissue.shape[1] / width, tissue.shape[0] / height
    fraction = box_fractions(tissue, xs * sx, ys * sy, (xs + ps0) * sx, (ys + ps0) * sy)
    keep = (fraction > 0) & (fraction >= min_tissue_fraction)
    if not keep.any():
        found = "no tissue" if not tissue.any() else f"no patch with >= {min_tissue_fraction:.0%} tissue"
        raise SlideError(
            f"slide {slide_id}: {found} ({columns * rows} grid positions checked)",
            hint="look at the thumbnail; adjust extract.tissue (thresholds) or extract.min_tissue_fraction if tissue was missed",
        )
    level = best_level(level_downsamples, ps0 / patch_size)
    factor = float(level_downsamples[level])
    return PatchGrid(
        patch_size=patch_size,
        patch_size_level0=ps0,
        target_mpp=target_mpp,
        slide_mpp=slide_mpp,
        level=level,
        level_downsample=factor,
        read_size=max(1, round(ps0 / factor)),
        coords=np.stack([xs[keep], ys[keep]], axis=1).astype(np.int64),
        tissue_fraction=fraction[keep].astype(np.float32),
        columns=columns,
        rows=rows,
    )
