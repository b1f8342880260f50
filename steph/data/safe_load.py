"""Tensors and arrays from untrusted bytes, without arbitrary unpickling.

Feature files and stores written by other tools hold pickles:

- ``torch.save`` archives (``.pt`` files; TRIDENT's ``--saveas pt`` saves a NumPy array this
  way) are read with ``torch.load(weights_only=True)``, which allows tensors and containers,
  plus exactly the three globals that rebuild a NumPy array (``_reconstruct``, ``ndarray``,
  ``dtype``).
- Raw ``pickle.dumps(tensor)`` values (the STEPH reference's LMDB) are read by
  :class:`TensorUnpickler`, whose only globals rebuild a tensor or an array. The storage bytes
  such a pickle embeds are themselves a ``torch.save`` archive and are loaded with
  ``weights_only=True``, never with ``torch.load``'s unsafe default that ``pickle.loads`` would use.

Every other global (``os.system``, ``builtins.eval`` ...) is refused with
:class:`ForbiddenGlobalError`, before anything is called. Arrays of Python objects are refused too.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._utils
from torch import Tensor

_ZIP_MAGIC = b"PK\x03\x04"


class ForbiddenGlobalError(pickle.UnpicklingError):
    """A pickle asked for a global that does not rebuild a tensor or an array."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"forbidden global {module}.{name}")
        self.global_name = f"{module}.{name}"


def _numpy_reconstruct() -> Callable[..., Any]:
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct  # type: ignore[no-any-return]


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_: Any) -> Tensor:
    """``torch._utils._rebuild_tensor_v2`` for data: the storage must be a storage, and the
    pickle's ``requires_grad``, backward hooks and metadata are dropped (hooks are callables)."""
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"a tensor must be rebuilt from a storage, got {type(storage).__name__}")
    return torch._utils._rebuild_tensor(storage, int(offset), tuple(size), tuple(stride))


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (``latin1``); nothing else."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError(f"only latin1 byte strings may be encoded, not {encoding!r}")
    return text.encode("latin1")


def _storage_from_bytes(data: bytes) -> Any:
    """``torch.storage._load_from_bytes`` without its ``weights_only=False``."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


_NUMERIC_DTYPES = [
    np.dtype(code)
    for code in [
        "bool",
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "float16",
        "float32",
        "float64",
    ]
]
_DTYPE_CLASSES = [type(dtype) for dtype in _NUMERIC_DTYPES if type(dtype) is not np.dtype]


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{("numpy.dtypes", cls.__name__): cls for cls in _DTYPE_CLASSES},
}


class TensorUnpickler(pickle.Unpickler):
    """An unpickler whose only globals rebuild tensors and NumPy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise ForbiddenGlobalError(module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a raw pickle")


@dataclass(frozen=True)
class _ShapeOnly:
    shape: tuple[int, ...]


class _ShapeUnpickler(TensorUnpickler):
    """Reads only the shape of a pickled tensor: the storage bytes are skipped, not parsed."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _skip_storage
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _shape_only
        return super().find_class(module, name)


def _skip_storage(data: bytes) -> None:
    return None


def _shape_only(storage: Any, offset: int, size: Any, *_: Any) -> _ShapeOnly:
    return _ShapeOnly(tuple(int(n) for n in size))


def pickled_shape(data: bytes) -> tuple[int, ...] | None:
    """The shape of a raw-pickled tensor without rebuilding it; None for anything else (arrays,
    ``torch.save`` archives, dicts), which the caller then reads in full."""
    if data[:4] == _ZIP_MAGIC:
        return None
    try:
        obj = _ShapeUnpickler(io.BytesIO(data)).load()
    except Exception:
        return None
    return obj.shape if isinstance(obj, _ShapeOnly) else None


def _numpy_safe_globals() -> list[Any]:
    reconstruct = _numpy_reconstruct()
    return [
        np.ndarray,
        np.dtype,
        *_DTYPE_CLASSES,
        reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
    ]


def torch_load_safe(source: Path | bytes) -> Any:
    """``torch.load(weights_only=True)`` that also accepts NumPy arrays (TRIDENT ``--saveas pt``)."""
    target: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(target, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's message is a page long: keep what was refused
        found = re.search(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>", str(exc))
        what = next((g for g in found.groups() if g), "") if found else ""
        raise pickle.UnpicklingError(
            f"the safe loader refused {what or 'this pickle'} (only tensors and numeric arrays are loaded)"
        ) from None


def loads_safe(data: bytes) -> Any:
    """A pickled value of an LMDB store: a ``torch.save`` archive or a raw pickle (tensor or array)."""
    if data[:4] == _ZIP_MAGIC:
        return torch_load_safe(data)
    return TensorUnpickler(io.BytesIO(data)).load()


def as_tensor(obj: Any) -> Tensor | None:
    """A tensor from a tensor, a numeric array, or a dict whose ``features`` holds one; else None."""
    if isinstance(obj, dict):
        obj = obj.get("features")
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "fiub":
            return None
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, Tensor):
        return obj
    return None
