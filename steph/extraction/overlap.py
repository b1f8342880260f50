"""Overlapping slide reading with encoder inference.

A pool of ``workers`` threads reads and resizes batches of patches ahead of the consumer (the
encoder, in the calling thread); at most ``prefetch`` batches wait in memory, so memory is
bounded by ``(prefetch + workers) x batch x patch bytes`` whatever the slide size. OpenSlide,
PIL resizing and PyTorch release the GIL, so threads overlap for real. Batches come out in grid
order. With ``workers = 0`` patches are read in the calling thread (no overlap).

How many reader threads: ``extract.workers`` when set, else :func:`reader_threads`'s rule, one
per CPU this process may use but one, between 2 and 16. OpenSlide costs ~2 ms of CPU per
256-px patch, so one thread reads ~500 patches/s; a ViT-g encoder at bf16 on an H100 (UNI2-h,
~1,000 patches/s) needs at least 3 readers, and a 16-core GPU node gets 15.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from PIL import Image

from ..slides.grid import PatchGrid
from ..slides.reader import Slide

log = logging.getLogger(__name__)

MAX_AUTO_READERS = 16
"""Beyond this many readers a node's memory bandwidth, not its cores, limits reading; set
``extract.workers`` to go higher."""

ReadBatch = Callable[[np.ndarray], np.ndarray]


def reader_threads(workers: int | None, cpus: int | None = None) -> int:
    """Reader threads for ``extract.workers``: itself when set, else ``clamp(cpus - 1, 2, 16)``.

    ``cpus`` defaults to :func:`steph.threads.usable_cpus` (affinity set, ``SLURM_CPUS_PER_TASK``,
    cgroup quota); one CPU is left to the thread that drives the encoder and writes features.
    """
    if workers is not None:
        return workers
    if cpus is None:
        from ..threads import usable_cpus

        cpus = usable_cpus()
    return min(MAX_AUTO_READERS, max(2, cpus - 1))


def patch_reader(slide: Slide, grid: PatchGrid) -> ReadBatch:
    """A function mapping ``[B, 2]`` level-0 coords to ``[B, patch, patch, 3]`` uint8 patches.

    Each patch is read at ``grid.level`` (``read_size`` level pixels) and resized to
    ``grid.patch_size`` with PIL's antialiased bilinear filter when the sizes differ.
    """
    size = grid.patch_size
    read = grid.read_size

    def read_batch(coords: np.ndarray) -> np.ndarray:
        out = np.empty((len(coords), size, size, 3), dtype=np.uint8)
        for i, (x, y) in enumerate(coords):
            if read == size:
                slide.read_rgb_into(out[i], int(x), int(y), grid.level)
                continue
            region = slide.read_rgb(int(x), int(y), grid.level, (read, read))
            out[i] = np.asarray(Image.fromarray(region).resize((size, size), Image.Resampling.BILINEAR))
        return out

    return read_batch


def iter_batches(
    read_batch: ReadBatch, coords: np.ndarray, *, batch_size: int, workers: int, prefetch: int | None = None
) -> Generator[tuple[np.ndarray, np.ndarray], None, None]:
    """Yield ``(patches, coords)`` batches in order, read by ``workers`` threads ahead of time.

    An exception raised while reading is re-raised here, at the batch it belongs to; leaving
    the loop early cancels the batches not yet started.
    """
    chunks = [coords[i : i + batch_size] for i in range(0, len(coords), batch_size)]
    if workers <= 0:
        for chunk in chunks:
            yield read_batch(chunk), chunk
        return
    depth = max(1, prefetch if prefetch is not None else 2 * workers)
    pending: deque[tuple[Future[np.ndarray], np.ndarray]] = deque()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="steph-read")
    try:
        next_chunk = 0
        while next_chunk < len(chunks) or pending:
            while next_chunk < len(chunks) and len(pending) < depth:
                chunk = chunks[next_chunk]
                pending.append((executor.submit(read_batch, chunk), chunk))
                next_chunk += 1
            future, chunk = pending.popleft()
            yield future.result(), chunk
    finally:
        for future, _ in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
