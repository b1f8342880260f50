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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, MissingArtifactError
from ..registry import Registry
from .encoder_identity import ENCODER_ATTRIBUTES
from .h5_raw import read_dataset
from .safe_load import as_tensor, torch_load_safe

H5_DATASETS = ("features", "feats")


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
            dataset = fh.get(name)
            if isinstance(dataset, h5py.Dataset):
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
            data = torch.from_numpy(np.asarray(dataset[()]) if array is None else array)
        return to_matrix(data, ref)

    def encoder(self, ref: SlideRef) -> str | None:
        with read_errors(ref), h5py.File(ref.path, "r") as fh:
            for dataset, attr in ENCODER_ATTRIBUTES:
                node = fh.get(dataset) if dataset else fh
                if node is not None:
                    found = _attr_text(node.attrs.get(attr))
                    if found:
                        return found
        return None


class TorchStore(FeatureStore):
    name = "pt"
    suffixes = (".pt", ".pth")
    description = "torch.save per slide: tensor, dict with 'features', or NumPy array (TRIDENT --saveas pt)"
    # parallel_reads stays False: torch_load_safe's torch.serialization.safe_globals is
    # process-wide, one thread leaving it removes the NumPy globals another is loading with

    def read(self, ref: SlideRef) -> Tensor:
        with read_errors(ref):
            obj = torch_load_safe(ref.path)
        tensor = as_tensor(obj)
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
        with read_errors(ref):
            return squeeze_shape(tuple(np.load(ref.path, mmap_mode="r").shape), ref)

    def read(self, ref: SlideRef) -> Tensor:
        with read_errors(ref):
            array = np.load(ref.path)
        tensor = as_tensor(array)
        if tensor is None:
            raise DataError(f"{ref}: array of dtype {array.dtype} is not numeric")
        return to_matrix(tensor, ref)


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
