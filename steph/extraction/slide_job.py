"""One slide from file to feature HDF5: MPP, tissue, grid, thumbnail, overlapped encoding.

A slide's job has two halves: :func:`prepare_slide` (open, MPP, tissue mask, grid, thumbnail,
first patch batches; no encoder) and :func:`encode_slide` (the encoder over every patch, into the
feature file). ``extract`` runs the next slide's preparation in a background thread while the
current one encodes (:mod:`steph.pipeline.extract`), so the encoder does not wait between slides.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..config.extract import ExtractConfig
from ..errors import SlideError
from ..extractors.base import Encoder
from ..progress import NULL_PROGRESS, Progress
from ..slides.grid import PatchGrid, make_grid
from ..slides.manifest import SlideEntry
from ..slides.mpp import SlideMpp, resolve_mpp
from ..slides.reader import Slide, read_thumbnail
from ..slides.tissue import tissue_mask
from .h5format import slide_identity, write_features
from .overlap import iter_batches, patch_reader, reader_threads
from .thumbnail import save_grid_thumbnail

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlideOutcome:
    """What extracting one slide produced."""

    n_patches: int
    mpp: SlideMpp
    patch_size_level0: int
    read_level: int
    seconds: float

    def describe(self) -> str:
        rate = self.n_patches / max(self.seconds, 1e-9)
        return (
            f"{self.n_patches} patches, {self.mpp.mpp:.4g} um/px from {self.mpp.source}, "
            f"{self.patch_size_level0} px at level 0 read from level {self.read_level}, "
            f"{self.seconds:.1f} s ({rate:.0f} patches/s)"
        )


@dataclass
class PreparedSlide:
    """A slide opened and planned, ready to encode: its MPP, patch grid and first batches.

    Holds the slide open; :meth:`close` it (``encode_slide`` does) or use it as a context manager.
    """

    entry: SlideEntry
    slide: Slide
    mpp: SlideMpp
    grid: PatchGrid
    head: list[np.ndarray]
    """The first ``len(head)`` batches of patches (``batch_size`` each, in grid order), read already."""
    batch_size: int
    started: float
    """``time.perf_counter()`` when the preparation began."""

    def close(self) -> None:
        self.head = []
        self.slide.close()

    def __enter__(self) -> PreparedSlide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare_slide(entry: SlideEntry, *, config: ExtractConfig, thumbnail: Path) -> PreparedSlide:
    """Open ``entry``, resolve its MPP, detect tissue, build the patch grid, draw it into
    ``thumbnail`` and read its first batches: everything of a slide but the encoder's work.

    The head is the first ``reader_threads(config.workers)`` batches, read by as many threads,
    so that the encoder has as many batches waiting as the read-ahead keeps in steady state.
    Safe to run in a background thread while another slide encodes.

    Raises:
        SlideError: the slide cannot be opened or decoded, has no plausible MPP, is smaller
            than one patch or has no tissue (the slide is then closed).
    """
    started = time.perf_counter()
    slide = Slide(entry.path, slide_id=entry.slide_id)
    try:
        mpp = resolve_mpp(
            slide.properties,
            slide_id=entry.slide_id,
            manifest_mpp=entry.mpp,
            fallback_mpp=config.mpp,
            mpp_range=config.mpp_range,
        )
        grid = _plan_grid(slide, entry, mpp, config, thumbnail)
        log.info(
            "slide %s: %s grid positions, %d patches kept",
            entry.slide_id,
            grid.columns * grid.rows,
            grid.n_patches,
        )
        workers = reader_threads(config.workers)
        n_head = max(1, workers) * config.batch_size
        batches = iter_batches(
            patch_reader(slide, grid), grid.coords[:n_head], batch_size=config.batch_size, workers=workers
        )
        head = [patches for patches, _ in batches]
    except BaseException:
        slide.close()
        raise
    return PreparedSlide(entry, slide, mpp, grid, head, config.batch_size, started)


def encode_slide(
    prepared: PreparedSlide,
    *,
    encoder: Encoder,
    config: ExtractConfig,
    output: Path,
    progress: Progress = NULL_PROGRESS,
    start: float | None = None,
) -> SlideOutcome:
    """Encode a prepared slide into ``output`` (atomically), then close it.

    ``start`` (a ``time.perf_counter()`` value, default: when its preparation began) is where
    the outcome's ``seconds`` count from: a caller that had the slide prepared in the
    background passes the moment it turned to this slide.
    """
    entry, slide, grid = prepared.entry, prepared.slide, prepared.grid
    with (
        prepared,
        write_features(
            output,
            embed_dim=encoder.spec.embed_dim,
            attrs=_file_attrs(entry, encoder, config, slide, prepared.mpp, grid),
            coords_attrs=_trident_attrs(entry, slide, grid),
            features_attrs={"name": entry.slide_id, "encoder": encoder.spec.name},
        ) as writer,
    ):
        progress.start("patches", grid.n_patches, unit="patches")
        size = prepared.batch_size
        done = len(prepared.head) * size
        batches = iter_batches(
            patch_reader(slide, grid),
            grid.coords[done:],
            batch_size=size,
            workers=reader_threads(config.workers),
        )
        try:
            for i, patches in enumerate(prepared.head):
                coords = grid.coords[i * size : (i + 1) * size]
                writer.append(encoder.encode(patches), coords)
                progress.advance("patches", len(coords), slide=entry.slide_id)
            prepared.head = []
            for patches, coords in batches:
                writer.append(encoder.encode(patches), coords)
                progress.advance("patches", len(coords), slide=entry.slide_id)
        finally:
            batches.close()
            progress.finish("patches")
    seconds = time.perf_counter() - (prepared.started if start is None else start)
    return SlideOutcome(grid.n_patches, prepared.mpp, grid.patch_size_level0, grid.level, seconds)


def extract_slide(
    entry: SlideEntry,
    *,
    encoder: Encoder,
    config: ExtractConfig,
    output: Path,
    thumbnail: Path,
    progress: Progress = NULL_PROGRESS,
) -> SlideOutcome:
    """Extract ``entry`` into ``output`` (atomically) and draw its grid into ``thumbnail``:
    :func:`prepare_slide` then :func:`encode_slide`, one after the other.

    Raises:
        SlideError: the slide cannot be opened or decoded, has no plausible MPP, is smaller
            than one patch or has no tissue. ``output`` is then left untouched.
    """
    prepared = prepare_slide(entry, config=config, thumbnail=thumbnail)
    return encode_slide(prepared, encoder=encoder, config=config, output=output, progress=progress)


def _plan_grid(
    slide: Slide, entry: SlideEntry, mpp: SlideMpp, config: ExtractConfig, thumbnail: Path
) -> PatchGrid:
    """Tissue mask on a thumbnail at ~``tissue.thumbnail_mpp``, then the patch grid; the
    thumbnail is saved (with the grid, or without when no patch is kept) for inspection."""
    width, height = slide.dimensions
    image = read_thumbnail(slide, max(1.0, config.tissue.thumbnail_mpp / mpp.mpp))
    thumb_mpp = mpp.mpp * width / image.shape[1]
    mask = tissue_mask(image, thumb_mpp, config.tissue)
    try:
        grid = make_grid(
            slide_id=entry.slide_id,
            dimensions=(width, height),
            level_downsamples=slide.level_downsamples,
            slide_mpp=mpp.mpp,
            target_mpp=config.target_mpp,
            patch_size=config.patch_size,
            tissue=mask,
            min_tissue_fraction=config.min_tissue_fraction,
        )
    except SlideError:
        save_grid_thumbnail(thumbnail, image, mask, None, (width, height))
        raise
    save_grid_thumbnail(thumbnail, image, mask, grid, (width, height))
    return grid


def _file_attrs(
    entry: SlideEntry, encoder: Encoder, config: ExtractConfig, slide: Slide, mpp: SlideMpp, grid: PatchGrid
) -> dict[str, object]:
    width, height = slide.dimensions
    return {
        "slide_id": entry.slide_id,
        "slide_path": str(entry.path),
        **{k: v for k, v in slide_identity(entry.path).items() if k != "slide_path"},
        "encoder": encoder.spec.name,
        "encoder_weights": encoder.weights_identity,
        "embed_dim": encoder.spec.embed_dim,
        "precision": encoder.precision,
        "patch_size": grid.patch_size,
        "target_mpp": grid.target_mpp,
        "slide_mpp": mpp.mpp,
        "mpp_source": mpp.source,
        "patch_size_level0": grid.patch_size_level0,
        "slide_width": width,
        "slide_height": height,
        "read_level": grid.level,
        "read_downsample": grid.level_downsample,
        "min_tissue_fraction": config.min_tissue_fraction,
        "stephctl_version": __version__,
    }


def _trident_attrs(entry: SlideEntry, slide: Slide, grid: PatchGrid) -> dict[str, object]:
    width, height = slide.dimensions
    return {
        "patch_size": grid.patch_size,
        "patch_size_level0": grid.patch_size_level0,
        "level0_magnification": 10.0 / grid.slide_mpp,
        "target_magnification": 10.0 / grid.target_mpp,
        "level0_width": width,
        "level0_height": height,
        "overlap": 0,
        "name": entry.slide_id,
    }
