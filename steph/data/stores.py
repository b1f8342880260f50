"""Feature stores: where a slide's patch features live and how they are read.

A store is chosen by the suffix of the ``paths.features`` template (or of our own ``.h5`` files):

==========  ======================  ==========================================================
store       suffixes                what it reads
==========  ======================  ==========================================================
``h5``      ``.h5``, ``.hdf5``      one file per slide; dataset ``features`` (stephctl, TRIDENT,
                                    CLAM, MahmoodLab's UNI2-h release) or ``feats`` (STAMP,
                                    whose ``coords`` are in µm; training does not use coords)
``pt``      ``.pt``, ``.pth``       one file per slide; a tensor, a dict whose ``features``
                                    holds one, or a NumPy array (TRIDENT ``--saveas pt``),
                                    loaded without arbitrary unpickling (:mod:`.safe_load`)
``npy``     ``.npy``                one file per slide; a numeric array (no pickles)
``lmdb``    ``.lmdb``               one store per cancer, looked up by slide id (the STEPH
                                    reference; needs ``stephctl[lmdb]``; :mod:`.lmdb_store`)
==========  ======================  ==========================================================

Features are ``[K, D]`` or ``[1, K, D]``; every store returns float32 ``[K, D]`` on the CPU.
Plugins add stores through the entry-point group ``stephctl.feature_stores`` (see
docs/extending.md): a callable receiving :data:`FEATURE_STORES` and adding
:class:`FeatureStore` instances.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import h5py
import numpy as np

from ..errors import DataError, MissingArtifactError
from ..registry import Registry
from .encoder_identity import ENCODER_ATTRIBUTES
from .h5_raw import read_dataset

if TYPE_CHECKING:
    from torch import Tensor

H5_DATASETS = ("features", "feats")
H5_MAX_EXPANSION = 100
"""A compressed (filtered) HDF5 dataset may hold at most this many times its file's size once
read; an uncompressed one at most the file's size."""


@dataclass(frozen=True)
class SlideRef:
    """Where one slide's features are: a file (``key`` None) or a key inside a store."""

    slide_id: str
    path: Path
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.path} [key {self.key}]" if self.key is not None else str(self.path)


class FeatureStore:
    """Reads slide features of one format. Subclasses set ``name``, ``suffixes`` and ``keyed``."""

    name: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()
    keyed: ClassVar[bool] = False
    """True: one store holds many slides, looked up by slide id; False: one file per slide."""
    description: ClassVar[str] = ""
    parallel_reads: ClassVar[bool] = False
    """True: :meth:`read` may run in several threads at once (the bag store then reads this
    store's slides concurrently); False (the default, plugins included): one read at a time."""

    def ref(self, path: Path, slide_id: str) -> SlideRef:
        return SlideRef(slide_id, path, slide_id if self.keyed else None)

    def missing(self, refs: Sequence[SlideRef]) -> list[SlideRef]:
        """The refs whose features do not exist (a keyed store also checks the store itself)."""
        return [ref for ref in refs if not ref.path.is_file()]

    def shape(self, ref: SlideRef) -> tuple[int, int]:
        """``(K, D)``, as cheaply as the format allows."""
        return squeeze_shape(tuple(self.read(ref).shape), ref)

    def read(self, ref: SlideRef) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def encoder(self, ref: SlideRef) -> str | None:
        """The encoder the features record (None when the format records none)."""
        return None


def squeeze_shape(shape: tuple[int, ...], ref: SlideRef | Path) -> tuple[int, int]:
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2 or shape[1] < 1:
        raise DataError(
            f"{ref}: features have shape {list(shape)}, expected [K, D] or [1, K, D]",
            hint="one row per patch, one column per feature dimension",
        )
    return int(shape[0]), int(shape[1])


def to_matrix(data: Tensor, ref: SlideRef | Path) -> Tensor:
    import torch

    k, d = squeeze_shape(tuple(data.shape), ref)
    return data.reshape(k, d).to(torch.float32).contiguous()


@contextlib.contextmanager
def read_errors(ref: SlideRef | Path, hint: str = "re-extract or re-download this slide") -> Iterator[None]:
    """Turn a reader's failure on ``ref`` into a :class:`DataError` (h5py, numpy, torch and lmdb
    raise many types for corrupt files); a DataError raised inside passes through unchanged."""
    try:
        yield
    except (DataError, MissingArtifactError):
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{ref}: cannot read features: {first}", hint=hint) from exc


def tensor_of(obj: Any, ref: SlideRef | Path) -> Tensor | None:
    """:func:`~.safe_load.as_tensor`, refusals named as a :class:`DataError`."""
    from .safe_load import UnsafeTensorError, as_tensor

    try:
        return as_tensor(obj)
    except UnsafeTensorError as exc:
        raise DataError(
            f"{ref}: refused features: {exc}",
            hint="save each slide's features as one dense CPU tensor: torch.save(features.contiguous().cpu(), path)",
        ) from None


def _attr_text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


class H5Store(FeatureStore):
    name = "h5"
    suffixes = (".h5", ".hdf5")
    description = "HDF5 per slide: dataset 'features' (stephctl, TRIDENT, CLAM, UNI2-h) or 'feats' (STAMP)"
    parallel_reads = True  # h5py locks itself; the raw reads are independent

    def _dataset(self, fh: h5py.File, ref: SlideRef) -> h5py.Dataset:
        for name in H5_DATASETS:
            dataset = _local_node(fh, name, ref)
            if isinstance(dataset, h5py.Dataset):
                _check_h5_dataset(dataset, ref)
                return dataset
        raise DataError(
            f"{ref}: no dataset 'features' or 'feats' (found: {', '.join(fh.keys()) or 'nothing'})",
            hint="rerun `stephctl extract --overwrite` for this slide, or point paths.features at the right files",
        )

    def shape(self, ref: SlideRef) -> tuple[int, int]:
        with read_errors(ref), h5py.File(ref.path, "r") as fh:
            return squeeze_shape(tuple(self._dataset(fh, ref).shape), ref)

    def read(self, ref: SlideRef) -> Tensor:
        """Raw ``os.preadv`` reads where they equal h5py's (threads then read in parallel,
        :mod:`.h5_raw`), else h5py."""
        with read_errors(ref), h5py.File(ref.path, "r") as fh:
            dataset = self._dataset(fh, ref)
            array = read_dataset(ref.path, dataset)
            data = tensor_of(np.asarray(dataset[()]) if array is None else array, ref)
        if data is None:  # pragma: no cover - _check_h5_dataset admits numeric types only
            raise DataError(f"{ref}: features are not numbers")
        return to_matrix(data, ref)

    def encoder(self, ref: SlideRef) -> str | None:
        with read_errors(ref), h5py.File(ref.path, "r") as fh:
            for dataset, attr in ENCODER_ATTRIBUTES:
                node = _local_node(fh, dataset, ref) if dataset else fh
                if node is not None:
                    found = _attr_text(node.attrs.get(attr))
                    if found:
                        return found
        return None


_OTHER_FILE_HINT = (
    "copy the features into the file itself (h5py: fh['features'] = other['features'][()]); "
    "stephctl reads only what a feature file holds"
)


def checked_h5_dataset(fh: h5py.File, name: str, where: SlideRef | Path) -> h5py.Dataset | None:
    """The dataset ``name`` of ``fh`` (None when there is none), refused as feature datasets
    are when it comes from another file or declares more than the file holds (coords, ...).

    Raises:
        DataError: see :func:`_check_h5_dataset`.
    """
    node = _local_node(fh, name, where)
    if not isinstance(node, h5py.Dataset):
        return None
    _check_h5_dataset(node, where)
    return node


def _local_node(fh: h5py.File, name: str, ref: SlideRef | Path) -> Any:
    """The object ``name`` of ``fh``, or None; an external link, or a soft link that ends in
    another file, is refused (the raw reader would read this file at the other file's offsets)."""
    link = fh.get(name, getlink=True)
    if link is None:
        return None
    if isinstance(link, h5py.ExternalLink):
        raise DataError(
            f"{ref}: {name!r} is an external link to {link.filename}:{link.path}", hint=_OTHER_FILE_HINT
        )
    node = fh.get(name)
    if node is not None and node.file.filename != fh.filename:
        raise DataError(
            f"{ref}: {name!r} leads into another file, {node.file.filename}", hint=_OTHER_FILE_HINT
        )
    return node


def _check_h5_dataset(dataset: h5py.Dataset, ref: SlideRef | Path) -> None:
    """Refuse, before reading, what is not numbers held in this file: virtual datasets and
    external storage (values from other files, e.g. a system file), non-numeric types, and more
    bytes than the file stores (unwritten chunks read as fill values; compression beyond
    :data:`H5_MAX_EXPANSION`).

    Raises:
        DataError: naming the dataset and what it declares.
    """
    where = f"{ref}: dataset {dataset.name!r}"
    plist = dataset.id.get_create_plist()
    if dataset.is_virtual or plist.get_external_count():
        what = "a virtual dataset" if dataset.is_virtual else "stored in external files"
        raise DataError(f"{where} is {what}, whose values come from outside this file", hint=_OTHER_FILE_HINT)
    from .safe_load import numeric_dtype

    dtype = dataset.dtype
    try:
        numeric_dtype(dtype)
    except Exception:
        raise DataError(
            f"{where} has type {dtype}, not numbers", hint="store features as float16 or float32 [K, D]"
        ) from None
    declared = math.prod(dataset.shape or ()) * dtype.itemsize
    filtered = plist.get_nfilters() > 0
    stored = dataset.id.get_storage_size()
    limit = min(stored, os.path.getsize(dataset.file.filename)) * (H5_MAX_EXPANSION if filtered else 1)
    if plist.get_layout() != h5py.h5d.COMPACT and declared > limit:
        raise DataError(
            f"{where} declares shape {list(dataset.shape)} ({declared:,} bytes), but the file stores "
            f"{stored:,} bytes of it"
            + (f" (compressed: at most {H5_MAX_EXPANSION}x is read)" if filtered else ""),
            hint="the file is partly written (unwritten chunks) or crafted; re-extract this slide",
        )


class TorchStore(FeatureStore):
    name = "pt"
    suffixes = (".pt", ".pth")
    description = "torch.save per slide: tensor, dict with 'features', or NumPy array (TRIDENT --saveas pt)"
    # parallel_reads stays False: torch_load_safe's torch.serialization.safe_globals is
    # process-wide, one thread leaving it removes the NumPy globals another is loading with

    def read(self, ref: SlideRef) -> Tensor:
        with read_errors(ref):
            from .safe_load import torch_load_safe

            obj = torch_load_safe(ref.path)
        tensor = tensor_of(obj, ref)
        if tensor is None:
            raise DataError(
                f"{ref}: expected a tensor, a numeric array or a dict with key 'features' holding one, "
                f"found {type(obj).__name__}",
                hint="save the features with torch.save(tensor) or point paths.features at the right files",
            )
        return to_matrix(tensor, ref)


class NumpyStore(FeatureStore):
    name = "npy"
    suffixes = (".npy",)
    description = "NumPy .npy per slide (numeric arrays only, no pickles)"
    parallel_reads = True

    def shape(self, ref: SlideRef) -> tuple[int, int]:
        with read_errors(ref), open(ref.path, "rb") as fh:
            return squeeze_shape(_npy_header(fh, ref)[0], ref)

    def read(self, ref: SlideRef) -> Tensor:
        with read_errors(ref), open(ref.path, "rb") as fh:
            shape, fortran, dtype = _npy_header(fh, ref)
            array = np.fromfile(fh, dtype=dtype, count=math.prod(shape)).reshape(
                shape, order="F" if fortran else "C"
            )
            tensor = tensor_of(array, ref)
        if tensor is None:  # pragma: no cover - _npy_header admits numeric dtypes only
            raise DataError(f"{ref}: array of dtype {array.dtype} is not numeric")
        return to_matrix(tensor, ref)


def _npy_header(fh: Any, ref: SlideRef) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran order, dtype)`` of the ``.npy`` file ``fh``, left at its data, checked
    before anything is allocated: a numeric dtype, and exactly the bytes the shape declares.

    Raises:
        DataError: another format version, a non-numeric dtype, or a size that does not match.
    """
    from .safe_load import numeric_dtype

    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise DataError(f"{ref}: .npy format version {version[0]}.{version[1]} holds no plain numeric array")
    try:
        numeric_dtype(dtype)
    except Exception:
        raise DataError(
            f"{ref}: array of dtype {dtype} is not numeric",
            hint="save features with np.save(path, features.astype('float32'))",
        ) from None
    declared = math.prod(shape) * dtype.itemsize
    held = os.fstat(fh.fileno()).st_size - fh.tell()
    if declared != held:
        raise DataError(
            f"{ref}: header declares shape {list(shape)} ({declared:,} bytes of {dtype}), the file holds {held:,}",
            hint="the file is truncated or crafted; re-extract or re-download this slide",
        )
    return shape, fortran, dtype


FEATURE_STORES: Registry[FeatureStore] = Registry(
    "feature store",
    "stephctl.feature_stores",
    builtin="steph.data.stores:register_builtins",
    list_hint="; plugins add stores through the entry-point group stephctl.feature_stores",
)


def register_builtins(registry: Registry[FeatureStore]) -> None:
    """Add the h5, pt, npy and lmdb stores (entry point ``stephctl.feature_stores: builtin``)."""
    from .lmdb_store import LmdbStore

    for store in (H5Store(), TorchStore(), NumpyStore(), LmdbStore()):
        registry.add(store.name, store)


def store_for(path: Path) -> FeatureStore:
    """The store that reads ``path``, chosen by its suffix.

    Raises:
        DataError: no registered store reads this suffix (names the path and the known ones).
    """
    suffix = path.suffix.lower()
    for _, store in FEATURE_STORES.items():
        if suffix and suffix in store.suffixes:
            return store
    known = ", ".join(f"{name} ({' '.join(store.suffixes)})" for name, store in FEATURE_STORES.items())
    raise DataError(
        f"{path}: no feature store reads {suffix or 'files without a suffix'!r}",
        hint=f"check paths.features in stephctl.yaml; known stores: {known} "
        "(plugins add more through the entry-point group stephctl.feature_stores)",
    )
