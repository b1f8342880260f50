"""Attention heatmaps on a slide thumbnail (or on the bare coordinate grid of a features-only slide).

Every patch paints its own level-0 square, ``[x, x + s) x [y, y + s)`` with ``s`` the patch edge
in level-0 pixels: a thumbnail pixel ``(i, j)`` of downsample ``d`` (level-0 pixels per
thumbnail pixel) takes the value of the patch that contains its centre ``((j + 1/2) d,
(i + 1/2) d)``, that is the columns ``ceil(x / d - 1/2) <= j < ceil((x + s) / d - 1/2)`` (rows
alike); a patch smaller than a pixel still paints the pixel under its corner. Pixels outside
every patch stay NaN (transparent).

The colour map is perceptual (:data:`CMAP`, viridis: lightness rises monotonically, so equal
steps of attention look like equal steps of colour). Two scalings (:class:`ColourScale`):

- ``absolute`` (the default): colour ``c_k = alpha_k / alpha_max`` with ``alpha_max`` the largest
  softmax weight of the patient over every map drawn (so the maps share one colour bar, in raw
  attention, with ``1/N``, uniform attention, marked on it). Near-uniform attention looks
  near-uniform.
- ``percentile``: the patch's attention *percentile within the patient*,

      q_k = rank(alpha_k) / (N - 1)      (0 = least attended patch, 1 = most attended; N = 1: q = 1)

  which spreads heavy-tailed weights over the whole map but shows any difference, however small,
  at full contrast; the figure then says when the attention is near-uniform (largest / smallest
  weight below :data:`NEAR_UNIFORM_RATIO`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..fileio import atomic_path

CMAP = "viridis"
OVERLAY_ALPHA = 0.55
MAX_THUMBNAIL_PX = 640
DPI = 110
GRID_BACKGROUND = (236, 236, 236)
NEAR_UNIFORM_RATIO = 2.0
"""Below this largest / smallest attention ratio, percentile colours exaggerate differences."""
SCALES = ("absolute", "percentile")
Scale = Literal["absolute", "percentile"]


def percentile_rank(values: np.ndarray) -> np.ndarray:
    """``rank(v_k) / (N - 1)`` in [0, 1] (ties get their mean rank); ``[1.0]`` for one value.

    >>> percentile_rank(np.array([0.1, 0.5, 0.2])).tolist()
    [0.0, 1.0, 0.5]
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n == 0:
        return values
    if n == 1:
        return np.ones(1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts
    ranks = (first + (counts - 1) / 2.0)[inverse.reshape(-1)]
    return ranks / (n - 1)


def thumbnail_downsample(size_level0: tuple[int, int], max_px: int = MAX_THUMBNAIL_PX) -> float:
    """Level-0 pixels per thumbnail pixel so that the longer side is at most ``max_px`` (>= 1)."""
    return max(1.0, max(size_level0) / max_px)


def raster_shape(size_level0: tuple[int, int], downsample: float) -> tuple[int, int]:
    """``(height, width)`` of the thumbnail of a ``(width, height)`` level-0 slide."""
    return max(1, round(size_level0[1] / downsample)), max(1, round(size_level0[0] / downsample))


def attention_raster(
    coords: np.ndarray,
    patch_size_level0: int,
    values: np.ndarray,
    size_level0: tuple[int, int],
    downsample: float,
) -> np.ndarray:
    """``[h, w]`` float array (NaN = no patch): each patch's value painted on its own cells.

    Args:
        coords: ``[N, 2]`` level-0 ``x, y`` of each patch's top-left corner.
        patch_size_level0: patch edge in level-0 pixels.
        values: ``[N]`` value per patch (rows as ``coords``).
        size_level0: slide ``(width, height)`` at level 0.
        downsample: level-0 pixels per raster pixel.
    """
    h, w = raster_shape(size_level0, downsample)
    out = np.full((h, w), np.nan, dtype=np.float64)
    side = float(patch_size_level0)
    for (x, y), value in zip(np.asarray(coords, dtype=np.float64), np.asarray(values), strict=True):
        x0, x1 = _span(x, side, downsample)
        y0, y1 = _span(y, side, downsample)
        out[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)] = value
    return out


def _span(start: float, side: float, downsample: float) -> tuple[int, int]:
    """Raster indices ``[a, b)`` whose pixel centres fall in ``[start, start + side)`` (at least one)."""
    a = math.ceil(start / downsample - 0.5)
    b = math.ceil((start + side) / downsample - 0.5)
    if b <= a:
        a = math.floor(start / downsample)
        b = a + 1
    return a, b


def grid_extent(coords: np.ndarray, patch_size_level0: int) -> tuple[int, int]:
    """``(width, height)`` covering every patch: the canvas of a features-only slide."""
    if len(coords) == 0:
        return patch_size_level0, patch_size_level0
    far = np.asarray(coords).max(axis=0) + patch_size_level0
    return int(far[0]), int(far[1])


def blend(canvas: np.ndarray, raster: np.ndarray, alpha: float) -> np.ndarray:
    """RGB uint8: ``(1 - alpha) canvas + alpha colour(raster)`` where a patch lies, the canvas elsewhere."""
    colours = colormaps[CMAP](np.nan_to_num(raster))[..., :3] * 255.0
    out = canvas.astype(np.float64)
    painted = ~np.isnan(raster)
    out[painted] = (1.0 - alpha) * out[painted] + alpha * colours[painted]
    return out.round().astype(np.uint8)


@dataclass(frozen=True)
class ColourScale:
    """How attention becomes a colour value in [0, 1] (see the module docstring).

    Build it from all the patient's attention (every slide, every map drawn) with
    :meth:`for_patient`, so that every figure of the patient uses the same scale.
    """

    kind: Scale
    high: float
    """``absolute``: the attention drawn at colour 1 (``alpha_max``); unused for ``percentile``."""
    patches: int
    """``N``, the patient's number of patches (``1/N`` is uniform attention)."""
    ratio: float
    """Largest / smallest attention of the patient (inf when a weight is 0)."""

    @classmethod
    def for_patient(cls, kind: Scale, attention: Sequence[np.ndarray]) -> ColourScale:
        """The scale of one patient from the attention of each map (each ``[N]``, all slides)."""
        if kind not in SCALES:
            raise ValueError(f"unknown heatmap scale {kind!r}; choose one of {', '.join(SCALES)}")
        values = [np.asarray(a, dtype=np.float64) for a in attention]
        high = max(float(v.max()) for v in values)
        low = min(float(v.min()) for v in values)
        ratio = high / low if low > 0 else math.inf
        return cls(kind, high if high > 0 else 1.0, int(values[0].size), ratio)

    def colour(self, attention: np.ndarray, percentile: np.ndarray) -> np.ndarray:
        """Colour values in [0, 1] of patches with this ``attention`` and ``percentile``."""
        if self.kind == "percentile":
            return np.asarray(percentile, dtype=np.float64)
        return np.clip(np.asarray(attention, dtype=np.float64) / self.high, 0.0, 1.0)

    @property
    def near_uniform(self) -> bool:
        return self.ratio < NEAR_UNIFORM_RATIO

    def caveat(self) -> str:
        """One line for the figure when percentile colours would mislead, else ``""``."""
        if self.kind == "percentile" and self.near_uniform:
            return (
                f"near-uniform attention (largest / smallest = {self.ratio:.2f}): percentile colours "
                "exaggerate small differences; see --scale absolute"
            )
        return ""


@dataclass(frozen=True)
class Panel:
    """One map of a heatmap figure: a title and the per-patch percentiles and raw attention."""

    title: str
    percentile: np.ndarray
    attention: np.ndarray


def draw_heatmap(
    path: Path,
    *,
    title: str,
    background: np.ndarray | None,
    coords: np.ndarray,
    patch_size_level0: int,
    size_level0: tuple[int, int],
    panels: Sequence[Panel],
    scale: ColourScale,
    note: str = "",
) -> Path:
    """Write a PNG with one panel per model: the thumbnail (or a grey canvas) under the map.

    ``background`` is an RGB thumbnail of the whole slide (any size; its downsample is taken
    from its width), or None for a features-only slide. The colour bar is ``scale``'s: raw
    attention from 0 to ``scale.high`` with ``1/N`` marked (absolute), or percentiles.
    """
    if background is not None:
        downsample = size_level0[0] / background.shape[1]
        canvas = background
    else:
        downsample = thumbnail_downsample(size_level0, max_px=512)
        h, w = raster_shape(size_level0, downsample)
        canvas = np.empty((h, w, 3), dtype=np.uint8)
        canvas[:] = GRID_BACKGROUND
    height, width = canvas.shape[:2]
    aspect = height / max(width, 1)
    n = len(panels)
    fig = Figure(figsize=(4.6 * n + 0.9, max(3.2, 4.6 * aspect + 1.3)), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        colour = scale.colour(panel.attention, panel.percentile)
        raster = attention_raster(coords, patch_size_level0, colour, size_level0, downsample)
        alpha = OVERLAY_ALPHA if background is not None else 1.0
        ax.imshow(blend(canvas, raster, alpha), interpolation="nearest")
        low, high = float(np.min(panel.attention)), float(np.max(panel.attention))
        ax.set_title(f"{panel.title}\nraw attention {low:.2g} to {high:.2g} (sum 1 per patient)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if n:
        _colour_bar(fig, list(axes), scale)
    caveat = scale.caveat()
    lines = [title] + [line for line in (note, caveat) if line]
    fig.suptitle("\n".join(lines), fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _colour_bar(fig: Figure, axes: list[Axes], scale: ColourScale) -> None:
    if scale.kind == "percentile":
        mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=CMAP)
        bar = fig.colorbar(mappable, ax=axes, shrink=0.85, ticks=[0, 0.25, 0.5, 0.75, 1.0])
        bar.ax.set_yticklabels(["0 least", "25", "50", "75", "100 most"])
        bar.set_label("attention percentile within the patient", fontsize=9)
        return
    mappable = ScalarMappable(norm=Normalize(0.0, scale.high), cmap=CMAP)
    bar = fig.colorbar(mappable, ax=axes, shrink=0.85)
    uniform = 1.0 / max(scale.patches, 1)
    if uniform <= scale.high:
        bar.ax.axhline(uniform, color="white", lw=3.0)
        bar.ax.axhline(uniform, color="black", lw=1.2, ls="--")
    bar.set_label(f"attention (softmax weight; dashed: uniform 1/N, N = {scale.patches})", fontsize=9)
