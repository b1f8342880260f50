"""Tissue detection on a low-resolution RGB thumbnail.

A pixel is tissue when its HSV saturation ``S = (max - min) / max`` (of R, G, B) exceeds a
threshold ``tau`` and its grey value ``(0.299 R + 0.587 G + 0.114 B) / 255`` is at most
``max_brightness``. ``tau`` is ``saturation_threshold`` when configured, otherwise Otsu's
threshold on the (3x3 median-filtered) saturation image clipped to
``[min_saturation, max_saturation]``: the floor keeps a blank white slide free of tissue, the
ceiling keeps a slide that is all tissue (no background mode for Otsu to find) from being cut
in two inside the tissue. Connected tissue components smaller than ``min_object_um2``
are dropped as debris, and holes (background components not touching the border) smaller than
``max_hole_um2`` are filled.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..config.extract import TissueConfig


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] of an ``[h, w, 3]`` uint8 image (0 where the pixel is black)."""
    rgb = rgb.astype(np.float32)
    high = rgb.max(axis=2)
    low = rgb.min(axis=2)
    return np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0).astype(np.float32)


def grey(rgb: np.ndarray) -> np.ndarray:
    """Luma ``(0.299 R + 0.587 G + 0.114 B) / 255`` in [0, 1]."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return (rgb.astype(np.float32) @ weights) / 255.0


def otsu_threshold(
    values: np.ndarray, bins: int = 256, value_range: tuple[float, float] = (0.0, 1.0)
) -> float:
    """Otsu's threshold: the histogram cut that maximises the between-class variance.

    For a cut after bin ``k``, with class weights ``w0(k) = sum_{i<=k} p_i``, ``w1 = 1 - w0``
    and class means ``mu0``, ``mu1``, the between-class variance is
    ``sigma_b^2(k) = w0 w1 (mu0 - mu1)^2``; the threshold is the upper edge of bin
    ``argmax_k sigma_b^2(k)`` (the first one on a plateau). A constant input returns its value.

    >>> otsu_threshold(np.array([0.1] * 50 + [0.9] * 50))  # upper edge of the bin holding 0.1
    0.1015625
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size == 0:
        return value_range[0]
    if np.ptp(flat) == 0:
        return float(flat[0])
    hist, edges = np.histogram(flat, bins=bins, range=value_range)
    p = hist.astype(np.float64) / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    total = m0[-1]
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1.0
    return float(edges[int(np.argmax(between)) + 1])


def tissue_mask(rgb: np.ndarray, mpp: float, config: TissueConfig) -> np.ndarray:
    """Boolean tissue mask ``[h, w]`` of a thumbnail whose pixels are ``mpp`` microns wide."""
    sat = ndimage.median_filter(saturation(rgb), size=3)
    if config.saturation_threshold is not None:
        tau = config.saturation_threshold
    else:
        tau = min(max(otsu_threshold(sat), config.min_saturation), config.max_saturation)
    mask = (sat > tau) & (grey(rgb) <= config.max_brightness)
    pixel_area = mpp * mpp
    mask = remove_small_objects(mask, config.min_object_um2 / pixel_area)
    return fill_small_holes(mask, config.max_hole_um2 / pixel_area)


def remove_small_objects(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """Drop 8-connected components with fewer than ``min_pixels`` pixels."""
    if min_pixels <= 1 or not mask.any():
        return mask
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    out: np.ndarray = keep[labels]
    return out


def fill_small_holes(mask: np.ndarray, max_pixels: float) -> np.ndarray:
    """Fill 4-connected background components that do not touch the border and are smaller than ``max_pixels``."""
    if max_pixels <= 0 or mask.all():
        return mask
    labels, count = ndimage.label(~mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = sizes < max_pixels
    fill[0] = False
    fill[border] = False
    out: np.ndarray = mask | fill[labels]
    return out
