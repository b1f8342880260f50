"""Raw ``os.preadv`` reads of HDF5 features (``steph.data.h5_raw``): bit-equal to h5py where used,
None (h5py reads) wherever the raw bytes could differ."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from steph.data.h5_raw import _chunk_infos, read_dataset
from steph.data.stores import H5Store, SlideRef
from steph.errors import DataError

RNG = np.random.default_rng(7)


def _write(path: Path, data: np.ndarray, **options: Any) -> Path:
    with h5py.File(path, "w") as fh:
        fh.create_dataset("features", data=data, **options)
    return path


def _h5py(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as fh:
        return np.asarray(fh["features"][()])


def _same(a: np.ndarray | None, b: np.ndarray) -> bool:
    return a is not None and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _appended(path: Path, data: np.ndarray, chunk_rows: int) -> Path:
    """As steph.extraction.h5format writes: resizable, chunked, rows appended in batches."""
    with h5py.File(path, "w") as fh:
        ds = fh.create_dataset(
            "features", shape=(0, data.shape[1]), maxshape=(None, data.shape[1]), dtype=data.dtype,
            chunks=(chunk_rows, data.shape[1]),
        )  # fmt: skip
        for start in range(0, len(data), 100):
            batch = data[start : start + 100]
            ds.resize(start + len(batch), axis=0)
            ds[start : start + len(batch)] = batch
    return path


@pytest.mark.parametrize(
    ("name", "data", "options"),
    [
        ("contiguous", RNG.standard_normal((300, 24)).astype("f4"), {}),
        ("chunked-partial", RNG.standard_normal((600, 24)).astype("f4"), {"chunks": (256, 24)}),
        (
            "chunk-larger-than-k",
            RNG.standard_normal((10, 24)).astype("f4"),
            {"chunks": (256, 24), "maxshape": (None, 24)},
        ),
        ("batched-chunked", RNG.standard_normal((1, 530, 16)).astype("f4"), {"chunks": (1, 256, 16)}),
        ("batched-contiguous", RNG.standard_normal((1, 50, 16)).astype("f4"), {}),
        ("float16", RNG.standard_normal((300, 24)).astype("f2"), {"chunks": (64, 24)}),
        ("float64", RNG.standard_normal((300, 24)), {}),
        ("int32", RNG.integers(-1000, 1000, (300, 24)).astype("i4"), {"chunks": (128, 24)}),
        ("uint8", RNG.integers(0, 255, (300, 24)).astype("u1"), {}),
    ],
)
def test_raw_read_equals_h5py(tmp_path: Path, name: str, data: np.ndarray, options: dict) -> None:
    path = _write(tmp_path / f"{name}.h5", data, **options)
    raw = read_dataset(path, "features")
    assert _same(raw, _h5py(path)) and _same(raw, data)


def test_appended_file_with_a_user_block_and_index_walks(tmp_path: Path) -> None:
    data = RNG.standard_normal((1000, 12)).astype("f4")
    path = _appended(tmp_path / "appended.h5", data, 256)
    assert _same(read_dataset(path, "features"), data)
    with h5py.File(tmp_path / "ub.h5", "w", userblock_size=512) as fh:
        fh.create_dataset("features", data=data, chunks=(100, 12))
    assert _same(read_dataset(tmp_path / "ub.h5", "features"), data)  # addresses include the block

    class WithoutChunkIter:  # h5py built on HDF5 < 1.14
        def __init__(self, dsid: Any) -> None:
            self.get_chunk_info, self.get_num_chunks = dsid.get_chunk_info, dsid.get_num_chunks

    with h5py.File(path, "r") as fh:
        dsid = fh["features"].id
        assert len(_chunk_infos(dsid)) == 4
        assert _chunk_infos(WithoutChunkIter(dsid)) == _chunk_infos(dsid)


def _unallocated(path: Path) -> Path:
    with h5py.File(path, "w") as fh:
        ds = fh.create_dataset("features", data=np.ones((256, 8), "f4"), maxshape=(None, 8), chunks=(256, 8))
        ds.resize(600, axis=0)  # chunks 2 and 3 never written: h5py returns the fill value
    return path


def _never_written(path: Path) -> Path:
    with h5py.File(path, "w") as fh:
        fh.create_dataset("features", shape=(20, 8), dtype="f4")
    return path


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("gzip", lambda p: _write(p, np.ones((300, 8), "f4"), compression="gzip")),
        ("shuffle", lambda p: _write(p, np.ones((300, 8), "f4"), shuffle=True, chunks=(64, 8))),
        ("fletcher32", lambda p: _write(p, np.ones((300, 8), "f4"), fletcher32=True, chunks=(64, 8))),
        ("split-columns", lambda p: _write(p, np.ones((300, 8), "f4"), chunks=(64, 4))),
        ("batched-split", lambda p: _write(p, np.ones((1, 300, 8), "f4"), chunks=(1, 64, 4))),
        ("unallocated", _unallocated),
        ("never-written", _never_written),
        ("big-endian", lambda p: _write(p, np.ones((300, 8), ">f4"))),
        ("zero-rows", lambda p: _write(p, np.ones((0, 8), "f4"), maxshape=(None, 8), chunks=(64, 8))),
        ("rank-1", lambda p: _write(p, np.ones(30, "f4"))),
        ("compact", lambda p: _compact(p)),
        ("12-bit-int", lambda p: _twelve_bit(p)),
    ],
)
def test_h5py_reads_what_raw_bytes_cannot(tmp_path: Path, name: str, make: Any) -> None:
    path = make(tmp_path / f"{name}.h5")
    assert read_dataset(path, "features") is None
    assert read_dataset(path, "nothing-here") is None


def _compact(path: Path) -> Path:
    space = h5py.h5s.create_simple((4, 8))
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_layout(h5py.h5d.COMPACT)
    with h5py.File(path, "w") as fh:
        dsid = h5py.h5d.create(fh.id, b"features", h5py.h5t.NATIVE_FLOAT, space, dcpl=plist)
        h5py.Dataset(dsid)[...] = np.ones((4, 8), "f4")
    return path


def _twelve_bit(path: Path) -> Path:
    """int16 in memory, 12 significant bits on disk: h5py sign-extends, the raw bytes do not."""
    kind = h5py.h5t.STD_I16LE.copy()
    kind.set_precision(12)
    with h5py.File(path, "w") as fh:
        dsid = h5py.h5d.create(fh.id, b"features", kind, h5py.h5s.create_simple((4, 3)))
        h5py.Dataset(dsid)[...] = -np.arange(12, dtype="i2").reshape(4, 3)
    return path


@pytest.mark.parametrize("raw", [True, False])
def test_h5_store_returns_the_same_tensor_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: bool
) -> None:
    data = RNG.standard_normal((1, 700, 16)).astype("f2")
    path = _write(tmp_path / "s.h5", data, chunks=(1, 256, 16))
    assert read_dataset(path, "features") is not None
    if not raw:
        monkeypatch.setattr("steph.data.stores.read_dataset", lambda *_: None)
    read = H5Store().read(SlideRef("s", path))
    assert read.dtype == torch.float32 and torch.equal(read, torch.from_numpy(data[0].astype("f4")))


def test_truncated_files_raise_data_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = RNG.standard_normal((600, 64)).astype("f4")
    path = _write(tmp_path / "cut.h5", data, chunks=(256, 64))
    os.truncate(path, path.stat().st_size - 4096)
    with pytest.raises(DataError, match=r"cut\.h5: cannot read features"):
        H5Store().read(SlideRef("cut", path))
    # a file cut after h5py read its header: the raw read comes up short, it does not pad
    path = _write(tmp_path / "short.h5", data)
    with h5py.File(path, "r") as fh:
        ds = fh["features"]
        os.truncate(path, ds.id.get_offset() + data.nbytes // 2)
        with pytest.raises(OSError, match="short read"):
            read_dataset(path, ds)

    # the same inside the store: a DataError naming the file
    def cut_then_read(path: Path, ds: h5py.Dataset) -> np.ndarray | None:
        os.truncate(path, ds.id.get_offset() + 100)
        return read_dataset(path, ds)

    path = _write(tmp_path / "store.h5", data)
    monkeypatch.setattr("steph.data.stores.read_dataset", cut_then_read)
    with pytest.raises(DataError, match=r"store\.h5: cannot read features: short read"):
        H5Store().read(SlideRef("store", path))
