"""Readers for per-slide patch features, whatever tool wrote them.

Formats (chosen by file suffix):

- ``.h5`` / ``.hdf5``: dataset ``features`` of shape ``[K, D]`` or ``[1, K, D]``. This covers our
  own files (``stephctl extract``), TRIDENT and the UNI2-h-DSS feature release.
- ``.pt`` / ``.pth``: a tensor ``[K, D]`` or ``[1, K, D]``, or a dict whose key ``features``
  holds one (loaded with ``torch.load(weights_only=True)``).
- ``.npy``: an array ``[K, D]`` or ``[1, K, D]``.

Every reader returns float32 ``[K, D]`` on the CPU; :func:`feature_shape` answers ``(K, D)``
cheaply where the format allows it (HDF5 and NumPy headers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor

from ..errors import DataError

H5_SUFFIXES = (".h5", ".hdf5")
PT_SUFFIXES = (".pt", ".pth")
NPY_SUFFIXES = (".npy",)
SUFFIXES = H5_SUFFIXES + PT_SUFFIXES + NPY_SUFFIXES


def _squeeze_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int]:
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2 or shape[1] < 1:
        raise DataError(
            f"{path}: features have shape {list(shape)}, expected [K, D] or [1, K, D]",
            hint="one row per patch, one column per feature dimension",
        )
    return int(shape[0]), int(shape[1])


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(
            f"{path}: unsupported feature file type {suffix or '(none)'!r}",
            hint="features must be .h5/.hdf5 (dataset 'features'), .pt/.pth or .npy; check paths.features",
        )
    return suffix


def _h5_dataset(fh: h5py.File, path: Path) -> h5py.Dataset:
    dataset = fh.get("features")
    if not isinstance(dataset, h5py.Dataset):
        raise DataError(
            f"{path}: no dataset 'features' (found: {', '.join(fh.keys()) or 'nothing'})",
            hint="rerun `stephctl extract --overwrite` for this slide, or point paths.features at the right files",
        )
    return dataset


@contextlib.contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """Turn a reader's failure on ``path`` into a :class:`DataError` (h5py, numpy and torch raise
    many types for corrupt files); a DataError raised inside passes through unchanged."""
    try:
        yield
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"{path}: cannot read features: {exc}", hint="re-extract or re-download this slide"
        ) from exc


def _load_pt(path: Path) -> Tensor:
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        obj = obj.get("features")
    if not isinstance(obj, Tensor):
        raise DataError(f"{path}: expected a tensor or a dict with key 'features' holding one")
    return obj


def feature_shape(path: Path) -> tuple[int, int]:
    """``(K, D)`` of a feature file.

    Raises:
        DataError: the file cannot be read, has no features or has the wrong rank.
    """
    suffix = _check_suffix(path)
    with _read_errors(path):
        if suffix in H5_SUFFIXES:
            with h5py.File(path, "r") as fh:
                shape = tuple(_h5_dataset(fh, path).shape)
        elif suffix in NPY_SUFFIXES:
            shape = tuple(np.load(path, mmap_mode="r").shape)
        else:
            shape = tuple(_load_pt(path).shape)
    return _squeeze_shape(shape, path)


def read_features(path: Path) -> Tensor:
    """All patch features of one slide, ``[K, D]`` float32 on the CPU.

    Raises:
        DataError: the file cannot be read, has no features or has the wrong rank.
    """
    suffix = _check_suffix(path)
    with _read_errors(path):
        if suffix in H5_SUFFIXES:
            with h5py.File(path, "r") as fh:
                data = torch.from_numpy(np.asarray(_h5_dataset(fh, path)[()]))
        elif suffix in NPY_SUFFIXES:
            data = torch.from_numpy(np.load(path))
        else:
            data = _load_pt(path)
    k, d = _squeeze_shape(tuple(data.shape), path)
    return data.reshape(k, d).to(torch.float32).contiguous()
