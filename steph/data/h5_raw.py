"""Reading an uncompressed HDF5 feature dataset as raw bytes, with ``os.preadv``.

Why: h5py holds one global lock for every call, so threads reading feature files take turns,
and one ``ds[()]`` moves 1.1-2.4 GB/s from the page cache. ``os.preadv`` into a preallocated
array releases the GIL and takes no h5py lock: on 8 files of 6000 x 1536 float32 it read
3.3 GB/s serially and 5.0 GB/s with 2 threads, bit-identical to h5py (on a busy 2-core
machine: 4.5 GB/s serially against h5py's 2.4). Only the layout (offsets, chunk index) is
asked of h5py, which is small.

:func:`read_dataset` returns None (the caller reads with h5py) unless the raw bytes are exactly
what h5py would return:

- the file is opened with the default ``sec2`` driver (file addresses are file offsets; a
  user block is included in them), ``os.preadv`` exists;
- the dataset is in ``path`` itself (not reached through an external link);
- no filters (compression, shuffle, fletcher32, ...), no external storage, not virtual;
- a native-byte-order integer or float dtype whose HDF5 type equals the one h5py would
  convert to (so no conversion happens);
- shape ``[K, D]`` or ``[1, K, D]`` with ``K, D >= 1``;
- contiguous layout: data allocated (``get_offset()`` not None) and storage size == nbytes;
- or chunked layout, each chunk a run of whole rows (``(r, D)`` or ``(1, r, D)``), every one of
  the ``ceil(K / r)`` chunks allocated, each stored at the full chunk size ``r * D * itemsize``.
  Of the last chunk only its ``K - start`` valid rows are copied.

A short read (the file shrank after h5py opened it) raises :class:`OSError`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["read_dataset"]

_Block = tuple[int, int, int]
"""``(file offset, first destination byte, byte count)``."""


def read_dataset(path: str | Path, dataset: h5py.Dataset | str) -> np.ndarray | None:
    """``dataset`` of the HDF5 file ``path`` (a name or an open dataset of that file) read with
    ``os.preadv``, or None when only h5py can read it exactly (see the module docstring).

    Raises:
        OSError: the file is shorter than the dataset's layout says.
    """
    if isinstance(dataset, str):
        with h5py.File(path, "r") as fh:
            found = fh.get(dataset)
            return read_dataset(path, found) if isinstance(found, h5py.Dataset) else None
    blocks = _blocks(dataset, path)
    if blocks is None:
        return None
    out = np.empty(dataset.shape, dtype=dataset.dtype)
    view = out.reshape(-1).view(np.uint8).data
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, start, count in blocks:
            _read_exactly(fd, view[start : start + count], offset)
    finally:
        os.close(fd)
    return out


def _read_exactly(fd: int, buffer: memoryview, offset: int) -> None:
    done = 0
    while done < len(buffer):
        got = os.preadv(fd, [buffer[done:]], offset + done)
        if got <= 0:
            raise OSError(f"short read: {done} of {len(buffer)} bytes at offset {offset} (truncated file?)")
        done += got


def _blocks(dataset: h5py.Dataset, path: str | Path) -> list[_Block] | None:
    """Where each byte range of the dataset is in the file, or None (use h5py)."""
    if not hasattr(os, "preadv") or dataset.file.driver != "sec2" or dataset.is_virtual:
        return None
    if not _same_file(dataset.file.filename, path):
        return None  # reached through an external link: its offsets are another file's
    dtype, shape = dataset.dtype, dataset.shape
    if dtype.kind not in "iuf" or not dtype.isnative:
        return None
    if not dataset.id.get_type().equal(h5py.h5t.py_create(dtype)):
        return None  # e.g. an enum or a non-IEEE float, which h5py converts
    lead = _leading_axes(shape)
    if lead is None:
        return None
    plist = dataset.id.get_create_plist()
    if plist.get_nfilters() != 0 or plist.get_external_count() != 0:
        return None
    nbytes = math.prod(shape) * dtype.itemsize
    layout = plist.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        offset = dataset.id.get_offset()
        if offset is None or dataset.id.get_storage_size() != nbytes:
            return None
        return [(offset, 0, nbytes)]
    if layout == h5py.h5d.CHUNKED:
        return _chunk_blocks(dataset.id, shape, dataset.chunks, lead, dtype.itemsize)
    return None


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _leading_axes(shape: tuple[int, ...]) -> int | None:
    """Number of size-1 axes before the row axis: 0 for ``[K, D]``, 1 for ``[1, K, D]``."""
    lead = {2: 0, 3: 1}.get(len(shape))
    if lead is None or any(n != 1 for n in shape[:lead]) or min(shape) < 1:
        return None
    return lead


def _chunk_blocks(
    dsid: Any, shape: tuple[int, ...], chunks: tuple[int, ...] | None, lead: int, itemsize: int
) -> list[_Block] | None:
    if chunks is None or chunks[:lead] != (1,) * lead or chunks[lead + 1 :] != shape[lead + 1 :]:
        return None  # a chunk must be whole rows
    rows, chunk_rows = shape[lead], chunks[lead]
    row_bytes = math.prod(shape[lead + 1 :]) * itemsize
    expected = -(-rows // chunk_rows)
    if dsid.get_num_chunks() != expected:
        return None  # some chunk never written (h5py returns the fill value there)
    blocks: list[_Block] = []
    seen: set[int] = set()
    for info in _chunk_infos(dsid):
        start = info.chunk_offset[lead]
        if (
            info.byte_offset is None
            or info.size != chunk_rows * row_bytes
            or any(info.chunk_offset[:lead])
            or any(info.chunk_offset[lead + 1 :])
            or start % chunk_rows
            or not 0 <= start < rows
            or start in seen
        ):
            return None
        seen.add(start)
        valid = min(chunk_rows, rows - start)
        blocks.append((info.byte_offset, start * row_bytes, valid * row_bytes))
    if len(seen) != expected:
        return None
    blocks.sort()  # file order: sequential reads
    return blocks


def _chunk_infos(dsid: Any) -> list[Any]:
    """Every chunk's ``StoreInfo`` (``chunk_offset``, ``filter_mask``, ``byte_offset``, ``size``):
    one index walk with ``chunk_iter`` (h5py built on HDF5 >= 1.14), else ``get_chunk_info(i)``
    per chunk (each a walk of the index)."""
    found: list[Any] = []
    walk: Callable[[Callable[[Any], None]], None] | None = getattr(dsid, "chunk_iter", None)
    if walk is not None:
        walk(found.append)
        return found
    return [dsid.get_chunk_info(i) for i in range(dsid.get_num_chunks())]
