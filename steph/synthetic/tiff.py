"""Writing small pyramidal, tiled TIFF slides that OpenSlide reads as Aperio SVS.

The first page's ImageDescription starts with ``Aperio`` and carries ``MPP`` and ``AppMag``,
which is what OpenSlide's Aperio driver parses into ``openslide.mpp-x/y`` and
``openslide.objective-power``. Every tiled page is one pyramid level (each half the size of the
previous one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..fileio import atomic_path


def aperio_description(width: int, height: int, mpp: float | None, tile: int) -> str:
    parts = [f"Aperio Image Library v12.0.15 \n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) RAW"]
    if mpp is not None:
        parts += [f"AppMag = {10.0 / mpp:g}", f"MPP = {mpp:.6f}"]
    parts += ["ScanScope ID = STEPHCTL-SYNTHETIC", "Filename = synthetic"]
    return "|".join(parts)


def write_pyramidal_tiff(
    path: Path | str,
    image: np.ndarray,
    *,
    mpp: float | None,
    tile: int = 256,
    min_level_size: int = 512,
    max_levels: int = 4,
    compression: str | None = "zlib",
    resolution_dpi: float | None = None,
) -> Path:
    """Write ``image`` (``[H, W, 3]`` uint8 RGB) as an Aperio-style pyramidal TIFF.

    Args:
        mpp: microns per pixel of level 0 written into the description (None = no MPP, as in
            slides whose scanner metadata was lost).
        resolution_dpi: also write TIFF resolution tags in dots per inch (e.g. 72, what generic
            image tools write), to test that implausible resolutions are refused.
    """
    import tifffile

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("image must be [H, W, 3] uint8")
    path = Path(path)
    levels = [image]
    while len(levels) < max_levels and min(levels[-1].shape[:2]) // 2 >= min_level_size:
        h, w = levels[-1].shape[:2]
        levels.append(np.asarray(Image.fromarray(levels[-1]).resize((w // 2, h // 2), Image.Resampling.BOX)))
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=False) as tif:
        for i, level in enumerate(levels):
            h, w = level.shape[:2]
            dpi = None if resolution_dpi is None else (resolution_dpi, resolution_dpi)
            tif.write(
                level,
                photometric="rgb",
                tile=(tile, tile),
                compression=compression,
                description=aperio_description(w, h, mpp if i == 0 else None, tile)
                if i == 0
                else f"Aperio level {i} -> {w}x{h}",
                metadata=None,
                resolution=dpi,
                resolutionunit=None if dpi is None else "INCH",
            )
    return path
