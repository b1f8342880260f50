"""Tiny pyramidal test slides with a known tissue layout, and projects that list them.

Tissue is drawn as rectangles given in microns, so the same layout can be rendered at 40x
(0.25 um/px) and 20x (0.5 um/px); the 20x image is the 40x image box-downsampled, as a
scanner's lower magnification of the same glass would be.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image

from steph.fileio import write_csv
from steph.synthetic.tiff import write_pyramidal_tiff

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in microns

# Test geometry: 64-px patches at 0.5 um/px are 32 um wide; blocks are aligned to that grid.
PATCH_UM = 32.0
SIZE_UM = (512.0, 384.0)
BLOCKS_UM: tuple[Box, ...] = ((64, 64, 256, 192), (320, 224, 448, 352))

TEST_EXTRACT_CONFIG = {
    "extract.patch_size": 64,
    "extract.target_mpp": 0.5,
    "extract.batch_size": 16,
    "extract.workers": 2,
    "extract.device": "cpu",
    "extract.tissue.thumbnail_mpp": 2.0,
    "extract.tissue.min_object_um2": 500.0,
    "extract.tissue.max_hole_um2": 500.0,
}


def expected_coords(
    blocks_um: Sequence[Box], slide_mpp: float, patch_um: float = PATCH_UM
) -> set[tuple[int, int]]:
    """Level-0 top-left corners of the grid patches fully inside the blocks."""
    step = round(patch_um / slide_mpp)
    coords = set()
    for x0, y0, x1, y1 in blocks_um:
        for gx in range(round(x0 / patch_um), round(x1 / patch_um)):
            for gy in range(round(y0 / patch_um), round(y1 / patch_um)):
                coords.add((gx * step, gy * step))
    return coords


def render(
    mpp: float,
    *,
    size_um: tuple[float, float] = SIZE_UM,
    blocks_um: Sequence[Box] = BLOCKS_UM,
    colour: tuple[int, int, int] = (200, 110, 170),
    seed: int = 0,
) -> np.ndarray:
    """RGB uint8 image at ``mpp``: near-white background, textured coloured blocks.

    Rendered at 0.25 um/px and box-downsampled when ``mpp`` is a multiple of it.
    """
    base = 0.25
    factor = round(mpp / base)
    if abs(factor * base - mpp) > 1e-9 or factor < 1:
        raise ValueError("mpp must be a multiple of 0.25")
    w, h = round(size_um[0] / base), round(size_um[1] / base)
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(243, 2, (h, w, 3)), 0, 255)
    for x0, y0, x1, y1 in blocks_um:
        sl = (slice(round(y0 / base), round(y1 / base)), slice(round(x0 / base), round(x1 / base)))
        shape = image[sl].shape
        texture = rng.normal(0, 18, shape[:2])[..., None]
        image[sl] = np.clip(np.array(colour, dtype=np.float64) + texture + rng.normal(0, 6, shape), 0, 255)
    image = image.astype(np.uint8)
    if factor > 1:
        image = np.asarray(Image.fromarray(image).resize((w // factor, h // factor), Image.Resampling.BOX))
    return image


def write_slide(
    path: Path,
    mpp: float | None,
    *,
    render_mpp: float | None = None,
    resolution_dpi: float | None = None,
    compression: str | None = None,
    **kwargs: object,
) -> Path:
    """Render the standard layout at ``render_mpp`` (default ``mpp``) and write it as a pyramidal TIFF.

    ``mpp`` None writes no MPP (with ``resolution_dpi``: generic TIFF resolution tags only).
    Tiles are uncompressed unless ``compression`` is given (fast to write and read in tests).
    """
    image = render(render_mpp or mpp or 0.5, **kwargs)  # type: ignore[arg-type]
    return write_pyramidal_tiff(
        path,
        image,
        mpp=mpp,
        tile=128,
        min_level_size=128,
        resolution_dpi=resolution_dpi,
        compression=compression,
    )


def write_blank_slide(path: Path, mpp: float = 0.5) -> Path:
    """A slide with background only (no tissue)."""
    return write_slide(path, mpp, blocks_um=())


def write_manifest(root: Path, rows: Sequence[dict[str, object]]) -> Path:
    """``slides/manifest.csv`` of a project with the given rows (paths relative to ``root`` or absolute)."""
    return write_csv(
        root / "slides" / "manifest.csv", ("slide_id", "patient_id", "cancer", "path", "mpp"), rows
    )


def row(slide_id: str, path: str | Path, *, cancer: str = "BRCA", mpp: float | str = "") -> dict[str, object]:
    return {
        "slide_id": slide_id,
        "patient_id": f"P-{slide_id}",
        "cancer": cancer,
        "path": str(path),
        "mpp": mpp,
    }


def corrupt_level0_tiles(path: Path) -> Path:
    """Garble every level-0 tile's zlib stream (write the slide with ``compression="zlib"``),
    so the file opens but its tiles cannot be decoded."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        spans = list(zip(page.dataoffsets, page.databytecounts, strict=True))
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for offset, count in spans:
        start = offset + 2  # keep the 2-byte zlib header, garble the stream
        data[start : offset + count] = rng.integers(0, 256, count - 2, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def record_grid_threads(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Patch the slide job's grid planning to record, per slide id, the thread it ran in (the
    next slide is prepared in a ``steph-prepare`` thread)."""
    import steph.extraction.slide_job as slide_job

    threads: dict[str, str] = {}
    plan_grid = slide_job._plan_grid

    def recording_plan_grid(slide: Any, entry: Any, *args: Any) -> Any:
        threads[entry.slide_id] = threading.current_thread().name
        return plan_grid(slide, entry, *args)

    monkeypatch.setattr(slide_job, "_plan_grid", recording_plan_grid)
    return threads
