"""The STEPH reference's feature store: one LMDB per cancer (``.../{dataset}.lmdb``).

Layout (as the reference writes and reads it): key ``__keys__`` holds a pickled list of the
original file names (``<slide>.pt``; the extension is dropped to get slide ids); every slide is
stored under its ``pathology_id`` (UTF-8) as a pickled float tensor ``[1, K, D]``.

The environment is opened read-only and without a lock file (``lock=False``), so hundreds of
array tasks can read one store at once, also from read-only file systems; each process opens a
store once. Values are unpickled by :func:`~steph.data.safe_load.loads_safe`: only tensor and
array reconstruction is allowed, never arbitrary globals. Needs the optional ``lmdb`` package
(``pip install 'stephctl[lmdb]'``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError, MissingArtifactError
from .stores import FeatureStore, SlideRef, read_errors, squeeze_shape, tensor_of, to_matrix

if TYPE_CHECKING:
    from torch import Tensor

KEYS = b"__keys__"
_REBUILD = "rebuild the store in the reference's layout (or re-copy it: a copy may be truncated)"


@dataclass(frozen=True)
class _Opened:
    env: Any
    slide_ids: frozenset[str]


class LmdbStore(FeatureStore):
    name = "lmdb"
    suffixes = (".lmdb",)
    keyed = True
    description = "LMDB per cancer, keyed by slide id (STEPH reference); needs stephctl[lmdb]"

    def __init__(self) -> None:
        self._opened: dict[Path, _Opened] = {}
        self._lock = threading.Lock()

    def _open(self, path: Path) -> _Opened:
        with self._lock:
            found = self._opened.get(path)
            if found is None:
                found = self._opened[path] = self._open_new(path)
            return found

    def _open_new(self, path: Path) -> _Opened:
        try:
            import lmdb
        except ImportError:
            raise DataError(
                f"{path}: reading an LMDB feature store needs the lmdb package",
                hint="pip install 'stephctl[lmdb]' (or: uv pip install lmdb)",
            ) from None
        if not path.exists():
            raise MissingArtifactError(
                f"LMDB feature store not found: {path}",
                hint="check paths.features in stephctl.yaml (e.g. /data/UNI2-h-features/TCGA/{dataset}.lmdb)",
            )
        with read_errors(path, hint=_REBUILD):
            env = lmdb.open(
                str(path),
                subdir=path.is_dir(),
                readonly=True,
                lock=False,
                readahead=False,
                meminit=False,
                max_readers=2048,
            )
            with env.begin(write=False) as txn:
                raw = txn.get(KEYS)
        if raw is None:
            env.close()
            raise DataError(
                f"{path}: LMDB store has no key '__keys__'",
                hint="the reference's layout stores a pickled list of '<slide>.pt' names under __keys__; "
                "write it with pickle.dumps(names) or " + _REBUILD,
            )
        from .safe_load import loads_safe

        try:
            names = loads_safe(bytes(raw))
        except Exception as exc:
            env.close()
            raise DataError(f"{path}: key '__keys__' cannot be read: {exc}", hint=_REBUILD) from exc
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            env.close()
            raise DataError(
                f"{path}: key '__keys__' holds {type(names).__name__}, not a list of file names",
                hint=_REBUILD,
            )
        return _Opened(env, frozenset(os.path.splitext(n)[0] for n in names))

    def slide_ids(self, path: Path) -> frozenset[str]:
        """Slide ids listed under ``__keys__``."""
        return self._open(path).slide_ids

    def missing(self, refs: Sequence[SlideRef]) -> list[SlideRef]:
        return [ref for ref in refs if ref.key not in self._open(ref.path).slide_ids]

    def _value(self, ref: SlideRef) -> bytes:
        opened = self._open(ref.path)
        key = ref.key or ref.slide_id
        with read_errors(ref, hint=_REBUILD), opened.env.begin(write=False) as txn:
            raw = txn.get(key.encode("utf-8"))
            data = None if raw is None else bytes(raw)
        if data is None:
            raise DataError(
                f"{ref.path}: key {key!r} is listed in __keys__ but holds no value",
                hint="add the slide's features to the store, or drop the slide from the labels",
            )
        return data

    def shape(self, ref: SlideRef) -> tuple[int, int]:
        """From the pickle's size tuple, without rebuilding the tensor (falls back to a full read)."""
        return value_shape(ref, self._value(ref))

    def read(self, ref: SlideRef) -> Tensor:
        return decode_value(ref, self._value(ref))

    def close(self) -> None:
        """Close every open environment (tests; a process normally keeps them open)."""
        with self._lock:
            for opened in self._opened.values():
                opened.env.close()
            self._opened.clear()


def value_shape(ref: SlideRef, data: bytes) -> tuple[int, int]:
    """``(K, D)`` of the LMDB value ``data`` of ``ref``: from the pickle's size tuple where it has
    one, else from :func:`decode_value`."""
    from .safe_load import pickled_shape

    shape = pickled_shape(data)
    return (
        squeeze_shape(shape, ref)
        if shape is not None
        else squeeze_shape(tuple(decode_value(ref, data).shape), ref)
    )


def decode_value(ref: SlideRef, data: bytes) -> Tensor:
    """The features ``[K, D]`` float32 of the LMDB value ``data`` of ``ref``.

    Raises:
        DataError: a refused global, a pickle that is not one tensor or array, or a refused tensor.
    """
    from .safe_load import ForbiddenGlobalError, loads_safe

    try:
        obj = loads_safe(data)
    except ForbiddenGlobalError as exc:
        raise DataError(
            f"{ref}: refused to unpickle: {exc} (only tensors and arrays are loaded)",
            hint="store each slide as pickle.dumps(tensor); do not use this store if you do not trust it",
        ) from None
    except Exception as exc:
        raise DataError(f"{ref}: value cannot be unpickled: {exc}", hint=_REBUILD) from exc
    tensor = tensor_of(obj, ref)
    if tensor is None:
        raise DataError(
            f"{ref}: value is a {type(obj).__name__}, not a tensor [1, K, D]",
            hint="store each slide as pickle.dumps(tensor) of shape [1, K, D] or " + _REBUILD,
        )
    return to_matrix(tensor, ref)
