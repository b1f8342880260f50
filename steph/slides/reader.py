"""Opening whole-slide images with OpenSlide and reading RGB regions from pyramid levels.

Any format OpenSlide reads (.svs, .tif/.tiff, .ndpi, .mrxs, .scn, .vms, DICOM, ...) works;
plain images (PNG, JPEG) open through OpenSlide's ``ImageSlide`` fallback, with one level and
no MPP. Every OpenSlide or image-decoding failure becomes a :class:`SlideError` naming the
slide and, for reads, the region. OpenSlide handles are thread-safe, so reader threads share
one :class:`Slide`.

Reads go straight from ``openslide_read_region`` into a NumPy buffer (the C call releases the
GIL) and are composited onto white from OpenSlide's premultiplied ARGB in one pass, into the
caller's batch array. The public ``OpenSlide.read_region`` adds an un-premultiply pass, a PIL
image and two copies: about 0.2-0.4 ms of CPU per 256-px patch (5 % of a cold read, 17 % when
the tiles are cached; OpenSlide's own decoding and painting are the rest).

``lowlevel._read_region`` is private to openslide-python, so it is only used after a check on
each opened slide (:func:`_raw_reader`): one small region read both ways must agree. A private
function that is gone, takes other arguments, fails, or fills the buffer differently makes the
slide use the public ``read_region`` (logged once per slide), as do slides opened through the
``ImageSlide`` fallback; the tests cover each of these cases.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..errors import SlideError
from .grid import best_level

if TYPE_CHECKING:
    from openslide import OpenSlide

log = logging.getLogger(__name__)


class Slide:
    """A whole-slide image: level geometry, properties, and RGB reads (white where no data)."""

    def __init__(self, path: Path | str, *, slide_id: str) -> None:
        import openslide

        self.path = Path(path)
        self.slide_id = slide_id
        if not self.path.is_file():
            raise SlideError(
                f"slide {slide_id}: file not found: {self.path}",
                hint="fix the `path` column of slides/manifest.csv (relative paths are relative to the project)",
            )
        try:
            self._osr = openslide.open_slide(str(self.path))
        except (openslide.OpenSlideError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise SlideError(
                f"slide {slide_id}: OpenSlide cannot open {self.path}: {type(exc).__name__}: {exc}",
                hint="check that the file is a complete whole-slide image in a format OpenSlide reads",
            ) from exc
        self._error_type: tuple[type[BaseException], ...] = (openslide.OpenSlideError, OSError, ValueError)
        self._raw_read = _raw_reader(self._osr)

    # -- geometry -----------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)`` in pixels."""
        return self._osr.dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._osr.level_downsamples)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._osr.level_dimensions

    @property
    def properties(self) -> Mapping[str, str]:
        return self._osr.properties

    def best_level(self, downsample: float) -> int:
        """The level with the largest downsample that is still ``<= downsample`` (see :func:`best_level`)."""
        return best_level(self.level_downsamples, downsample)

    # -- reading ------------------------------------------------------------------------------
    def read_rgb(self, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB ``[h, w, 3]`` uint8 of the region at level-0 ``(x, y)`` with ``size = (w, h)`` level pixels.

        Transparent pixels (outside the scanned area) are composited onto white.

        Raises:
            SlideError: the region's tiles cannot be decoded.
        """
        out = np.empty((int(size[1]), int(size[0]), 3), dtype=np.uint8)
        self.read_rgb_into(out, x, y, level)
        return out

    def read_rgb_into(self, out: np.ndarray, x: int, y: int, level: int) -> None:
        """Fill ``out`` (``[h, w, 3]`` uint8, e.g. one patch of a batch) with the region at
        level-0 ``(x, y)`` of ``level``, composited onto white; no intermediate RGB copy.

        Raises:
            SlideError: the region's tiles cannot be decoded.
        """
        h, w = int(out.shape[0]), int(out.shape[1])
        try:
            if self._raw_read is not None:
                argb = np.empty((h, w), dtype=np.uint32)
                if h and w:
                    self._raw_read(argb, int(x), int(y), int(level), w, h)
                premultiplied_argb_onto_white(argb, out)
            else:
                region = self._osr.read_region((int(x), int(y)), int(level), (w, h))
                out[...] = rgba_to_rgb(np.asarray(region))
        except self._error_type as exc:
            raise SlideError(
                f"slide {self.slide_id}: cannot decode the region at level-0 ({x}, {y}), level {level}, "
                f"size {w}x{h}: {type(exc).__name__}: {exc}",
                hint="the file is damaged (truncated copy or corrupt tiles); re-copy or re-scan it",
            ) from exc

    def close(self) -> None:
        self._osr.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


RawRead = Callable[[np.ndarray, int, int, int, int, int], None]

# A native-endian uint32 ARGB pixel is the bytes B, G, R, A in memory on little-endian machines
# and A, R, G, B on big-endian ones.
_RGB_BYTES = slice(2, None, -1) if sys.byteorder == "little" else slice(1, None)
_ALPHA_BYTE = 3 if sys.byteorder == "little" else 0


PROBE_PX = 32
"""Edge of the region read both ways when a slide opens, to check the private reader."""


def _raw_reader(handle: object) -> RawRead | None:
    """``read(argb, x, y, level, w, h)`` filling a C-contiguous ``[h, w]`` uint32 array through
    ``openslide_read_region``, or None where only the public API is usable: an ImageSlide, an
    openslide-python without ``lowlevel._read_region``, or one whose private function no longer
    reads what the public ``read_region`` reads (:func:`_agrees_with_public`)."""
    from openslide import OpenSlide

    c_read = _private_read_region()
    c_handle = getattr(handle, "_osr", None)
    if not isinstance(handle, OpenSlide) or c_read is None or c_handle is None:
        return None
    pointer = ctypes.POINTER(ctypes.c_uint32)

    def read(argb: np.ndarray, x: int, y: int, level: int, w: int, h: int) -> None:
        c_read(c_handle, argb.ctypes.data_as(pointer), x, y, level, w, h)

    return read if _agrees_with_public(read, handle) else None


def _private_read_region() -> Callable[..., None] | None:
    """openslide-python's private ctypes binding of ``openslide_read_region``, if it still has one."""
    from openslide import lowlevel

    return getattr(lowlevel, "_read_region", None)


def _agrees_with_public(read: RawRead, handle: OpenSlide) -> bool:
    """Read a ``PROBE_PX`` square at the centre of the smallest level through ``read`` and through
    the public ``read_region``; True when both give the same RGB (within 1, the rounding of
    OpenSlide's premultiplied alpha). Any exception from the private call counts as a change."""
    level = handle.level_count - 1
    level_w, level_h = handle.level_dimensions[level]
    w, h = max(1, min(PROBE_PX, level_w)), max(1, min(PROBE_PX, level_h))
    factor = handle.level_downsamples[level]
    x, y = round((level_w - w) / 2 * factor), round((level_h - h) / 2 * factor)
    try:
        public = rgba_to_rgb(np.asarray(handle.read_region((x, y), level, (w, h))))
    except Exception:  # the public path fails too: the real read reports it
        return True
    try:
        argb = np.zeros((h, w), dtype=np.uint32)
        read(argb, x, y, level, w, h)
        direct = np.empty((h, w, 3), dtype=np.uint8)
        premultiplied_argb_onto_white(argb, direct)
    except Exception as exc:  # whatever the private API does now: fall back
        log.warning(
            "openslide-python's private lowlevel._read_region failed (%s: %s); reading through the "
            "public read_region (about 0.3 ms more per patch)",
            type(exc).__name__,
            exc,
        )
        return False
    if np.abs(direct.astype(np.int16) - public.astype(np.int16)).max(initial=0) > 1:
        log.warning(
            "openslide-python's private lowlevel._read_region no longer reads what read_region reads; "
            "reading through the public read_region (about 0.3 ms more per patch)"
        )
        return False
    return True


def premultiplied_argb_onto_white(argb: np.ndarray, out: np.ndarray) -> None:
    """Composite OpenSlide's premultiplied ARGB ``[h, w]`` uint32 onto white, into ``out`` ``[h, w, 3]``.

    With premultiplied channels ``C' = C a / 255``, "over white" is
    ``C a / 255 + 255 (1 - a / 255) = C' + (255 - a)``: exact in uint8, since ``C' <= a``.
    """
    pixels = argb.view(np.uint8).reshape(*argb.shape, 4)
    rgb, alpha = pixels[..., _RGB_BYTES], pixels[..., _ALPHA_BYTE]
    if alpha.min(initial=255) == 255:
        out[...] = rgb
    else:
        np.add(rgb, (255 - alpha)[..., None], out=out)


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite non-premultiplied RGBA ``[h, w, 4]`` onto white: ``rgb * a + 255 * (1 - a)``."""
    alpha = rgba[..., 3]
    if alpha.min(initial=255) == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha[..., None].astype(np.float32) / 255.0
    out = rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    rgb: np.ndarray = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return rgb


def read_thumbnail(slide: Slide, downsample: float, *, strip_rows: int = 1024) -> np.ndarray:
    """RGB thumbnail of the whole slide at ``downsample`` (level-0 pixels per thumbnail pixel).

    Reads the best level in horizontal strips, each resized on its own, so memory stays
    bounded by one strip (``level width x strip_rows``) whatever the slide size.
    """
    width, height = slide.dimensions
    out_w, out_h = max(1, round(width / downsample)), max(1, round(height / downsample))
    level = slide.best_level(downsample)
    factor = slide.level_downsamples[level]
    level_w, level_h = slide.level_dimensions[level]
    rows: list[np.ndarray] = []
    done_out = 0
    for top in range(0, level_h, strip_rows):
        bottom = min(level_h, top + strip_rows)
        out_bottom = out_h if bottom == level_h else round(bottom * out_h / level_h)
        if out_bottom <= done_out:
            continue
        strip = slide.read_rgb(0, round(top * factor), level, (level_w, bottom - top))
        resized = Image.fromarray(strip).resize((out_w, out_bottom - done_out), Image.Resampling.BOX)
        rows.append(np.asarray(resized))
        done_out = out_bottom
    return np.concatenate(rows, axis=0)
