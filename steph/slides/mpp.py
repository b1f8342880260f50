"""Microns per pixel (MPP) of a slide's level 0, and where it came from.

Sources, in order: the slide's own metadata (``openslide.mpp-x``, or the TIFF resolution tags
when their unit is centimetre or inch), the manifest's ``mpp`` column, the ``--mpp`` /
``extract.mpp`` fallback. A value outside the plausible range for microscopy
(``extract.mpp_range``, e.g. the 352.8 um/px of a 72-dpi TIFF) is never used; the next
source is tried. A slide left without a plausible value is an error for that slide, never a
guess. The TIFF conversion is ``mpp = 10^4 / XResolution`` (pixels per centimetre) or
``25400 / XResolution`` (pixels per inch).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import SlideError

log = logging.getLogger(__name__)

MICRONS_PER_UNIT = {"centimeter": 1e4, "cm": 1e4, "inch": 25400.0, "in": 25400.0}


@dataclass(frozen=True)
class SlideMpp:
    """Level-0 resolution of a slide: ``mpp`` microns per pixel, read from ``source``."""

    mpp: float
    source: str
    """``slide:openslide.mpp-x``, ``slide:tiff-resolution``, ``manifest`` or ``config``."""


def mpp_from_properties(properties: Mapping[str, str]) -> tuple[float | None, str]:
    """The slide's own MPP (None when it declares none) and the property it came from.

    >>> mpp_from_properties({"openslide.mpp-x": "0.2527"})
    (0.2527, 'slide:openslide.mpp-x')
    >>> mpp_from_properties({"tiff.XResolution": "72", "tiff.ResolutionUnit": "inch"})
    (352.77777777777777, 'slide:tiff-resolution')
    """
    value = _float(properties.get("openslide.mpp-x"))
    if value is not None and value > 0:
        other = _float(properties.get("openslide.mpp-y"))
        if other is not None and other > 0 and abs(other - value) > 0.01 * value:
            log.warning("non-square pixels (mpp-x %.4f, mpp-y %.4f): using mpp-x", value, other)
        return value, "slide:openslide.mpp-x"
    unit = (properties.get("tiff.ResolutionUnit") or "").strip().lower()
    resolution = _float(properties.get("tiff.XResolution"))
    if unit in MICRONS_PER_UNIT and resolution is not None and resolution > 0:
        return MICRONS_PER_UNIT[unit] / resolution, "slide:tiff-resolution"
    return None, ""


def resolve_mpp(
    properties: Mapping[str, str],
    *,
    slide_id: str,
    manifest_mpp: float | None,
    fallback_mpp: float | None,
    mpp_range: tuple[float, float],
) -> SlideMpp:
    """The first plausible MPP among slide metadata, manifest and fallback.

    Raises:
        SlideError: no source gives a value inside ``mpp_range``; the message lists what
            each source said.
    """
    lo, hi = mpp_range
    slide_value, slide_source = mpp_from_properties(properties)
    candidates = [
        (slide_value, slide_source or "slide"),
        (manifest_mpp, "manifest"),
        (fallback_mpp, "config"),
    ]
    notes: list[str] = []
    for value, source in candidates:
        if value is None:
            continue
        if lo <= value <= hi:
            if notes:
                log.warning(
                    "slide %s: %s; using %.4f um/px from %s", slide_id, "; ".join(notes), value, source
                )
            return SlideMpp(float(value), source)
        notes.append(f"{source} says {value:.4g} um/px, outside the plausible range [{lo:g}, {hi:g}]")
    said = {
        "slide": "the slide declares no MPP",
        "manifest": "the manifest has no mpp for it",
        "config": "no --mpp / extract.mpp fallback",
    }
    for value, source in candidates:
        if value is None:
            notes.append(said[source.split(":")[0]])
    raise SlideError(
        f"slide {slide_id}: no plausible microns-per-pixel: " + "; ".join(notes),
        hint="put the scanner's true MPP in the `mpp` column of slides/manifest.csv "
        "(or pass --mpp / set extract.mpp for all slides without one); 0.25 = 40x, 0.5 = 20x",
    )


def _float(text: str | None) -> float | None:
    if text is None or str(text).strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None
