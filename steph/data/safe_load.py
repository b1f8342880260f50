"""Tensors and arrays from untrusted bytes, without arbitrary unpickling.

Feature files and stores written by other tools hold pickles:

- ``torch.save`` archives (``.pt`` files; TRIDENT's ``--saveas pt`` saves a NumPy array this
  way) are read with ``torch.load(weights_only=True)``, which allows tensors and containers,
  plus the three NumPy globals that rebuild an array (``_reconstruct``, ``ndarray``, ``dtype``),
  each replaced by a checked stand-in.
- Raw ``pickle.dumps(tensor)`` values (the STEPH reference's LMDB) are read by
  :class:`TensorUnpickler`, whose only globals rebuild a tensor or an array. The storage bytes
  such a pickle embeds are themselves a ``torch.save`` archive and are loaded with
  ``weights_only=True``, never with ``torch.load``'s unsafe default that ``pickle.loads`` would use.

Every other global (``os.system``, ``builtins.eval`` ...) is refused with
:class:`ForbiddenGlobalError`, before anything is called. A pickle never gets numpy's own
``ndarray`` or ``dtype``: numpy would build an array of Python objects from raw file bytes
(pointers taken from the file: a SIGSEGV when read). The stand-ins build only arrays of bool,
integer and float dtypes, from bytes the pickle holds (so an array is never larger than its
pickle), without strides. :func:`checked_tensor` then refuses tensors that are not dense CPU
numbers held in their own storage (sparse, meta, stride-0 expansions).
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch._utils
from torch import Tensor

_torch_rebuild_tensor: Callable[[Any, int, tuple[int, ...], tuple[int, ...]], Tensor] = (
    torch._utils._rebuild_tensor
)
"""``torch._utils._rebuild_tensor`` (storage, offset, size, stride), which torch leaves unannotated."""

_ZIP_MAGIC = b"PK\x03\x04"


class ForbiddenGlobalError(pickle.UnpicklingError):
    """A pickle asked for a global that does not rebuild a tensor or an array."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"forbidden global {module}.{name}")
        self.global_name = f"{module}.{name}"


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_: Any) -> Tensor:
    """``torch._utils._rebuild_tensor_v2`` for data: the storage must be a storage, and the
    pickle's ``requires_grad``, backward hooks and metadata are dropped (hooks are callables)."""
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"a tensor must be rebuilt from a storage, got {type(storage).__name__}")
    return _torch_rebuild_tensor(storage, int(offset), tuple(size), tuple(stride))


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
_MAX_RANK = 8
_MAX_DTYPE_SPEC = 16


def numeric_dtype(spec: Any) -> np.dtype:
    """``spec`` as a plain numeric NumPy dtype (bool, integer or float, either byte order).

    Raises:
        UnpicklingError: anything else: objects, strings, structured or sub-array dtypes.
    """
    if isinstance(spec, _PendingDtype):
        return spec.resolve()
    if isinstance(spec, np.dtype):
        dtype = spec
    elif isinstance(spec, str) and len(spec) <= _MAX_DTYPE_SPEC:
        try:
            dtype = np.dtype(spec)
        except (TypeError, ValueError):
            raise pickle.UnpicklingError(f"not a dtype: {spec!r}") from None
    else:
        raise pickle.UnpicklingError(f"a dtype must be a short string, not {type(spec).__name__}")
    if (
        dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.newbyteorder("=") not in _NUMERIC_DTYPES
    ):
        raise pickle.UnpicklingError(
            f"dtype {dtype} is not numeric (only bool, integer and float arrays are loaded)"
        )
    return dtype


def _shape(value: Any) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > _MAX_RANK:
        raise pickle.UnpicklingError(f"an array shape must be a tuple of at most {_MAX_RANK} sizes")
    if not all(type(n) is int and n >= 0 for n in value):
        raise pickle.UnpicklingError(f"an array shape must hold sizes >= 0, got {value!r}")
    return tuple(value)


def _array_from_bytes(
    data: Any, dtype: np.dtype, shape: tuple[int, ...], offset: int, fortran: bool
) -> np.ndarray:
    """A copy of ``prod(shape)`` values of ``dtype`` read from ``data`` at ``offset``: the bytes
    must be there, so an array is never larger than the pickle that holds it."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"array data must be bytes, not {type(data).__name__}")
    count = math.prod(shape)
    if type(offset) is not int or offset < 0 or offset + count * dtype.itemsize > len(data):
        raise pickle.UnpicklingError(
            f"array of shape {list(shape)} ({dtype}) needs {count * dtype.itemsize} bytes "
            f"from offset {offset}, the pickle holds {len(data)}"
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


ByteOrder = Literal["<", ">", "|", "="]
_BYTE_ORDERS: dict[str, ByteOrder] = {"<": "<", ">": ">", "|": "|", "=": "="}


class _PendingDtype:
    """Stands for ``numpy.dtype(spec)`` while unpickling; the state a pickle then sets may only
    give the byte order (never fields, which could declare objects)."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        numeric_dtype(spec)
        self.spec: str = spec
        self.order: ByteOrder = "="

    def __setstate__(self, state: Any) -> None:
        # numpy's state: (version, byte order, sub-array, names, fields, item size, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 5 or state[1] not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError("malformed dtype state")
        if any(item is not None for item in state[2:5]):
            raise pickle.UnpicklingError("structured or sub-array dtypes are not loaded")
        self.order = _BYTE_ORDERS[state[1]]

    def resolve(self) -> np.dtype:
        dtype = np.dtype(self.spec)
        return numeric_dtype(dtype.newbyteorder(self.order) if self.order in "<>" else dtype)


class _PendingArray:
    """Stands for a NumPy array while unpickling, built only from a numeric dtype and bytes that
    the pickle holds; :func:`_finish` swaps in the array. A pickle never gets a real ``ndarray``
    to call or set the state of (numpy would build object arrays from raw bytes, whose
    "pointers" come from the file)."""

    def __init__(self, array: np.ndarray | None = None) -> None:
        self.array = array

    def __setstate__(self, state: Any) -> None:
        # numpy's state: ([version,] shape, dtype, is_fortran, raw bytes)
        if self.array is not None:
            raise pickle.UnpicklingError("an array's state is set once")
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4 or not isinstance(state[2], bool):
            raise pickle.UnpicklingError("malformed array state")
        shape, dtype, fortran, data = _shape(state[0]), numeric_dtype(state[1]), state[2], state[3]
        count = math.prod(shape) * dtype.itemsize
        if not isinstance(data, (bytes, bytearray)) or len(data) != count:
            raise pickle.UnpicklingError(
                f"array of shape {list(shape)} ({dtype}) needs exactly {count} bytes"
            )
        self.array = _array_from_bytes(data, dtype, shape, 0, fortran)


class _NdarrayClass:
    """Stands for ``numpy.ndarray`` in a pickle: the class ``_reconstruct`` is given, and the
    constructor ``ndarray(shape, dtype, buffer, offset)`` (a buffer is required, strides are not
    accepted, so stride tricks cannot repeat bytes)."""

    def __call__(
        self,
        shape: Any,
        dtype: Any = "float64",
        buffer: Any = None,
        offset: Any = 0,
        strides: Any = None,
        order: Any = None,
    ) -> _PendingArray:
        if buffer is None or strides is not None:
            raise pickle.UnpicklingError("an array must be built from bytes in the pickle, without strides")
        shape = _shape((shape,) if type(shape) is int else shape)
        return _PendingArray(_array_from_bytes(buffer, numeric_dtype(dtype), shape, offset, order == "F"))


_NDARRAY = _NdarrayClass()


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _PendingArray:
    """``numpy.core.multiarray._reconstruct``: an empty array whose state the pickle sets next."""
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError("only numpy.ndarray is reconstructed")
    return _PendingArray()


def _finish(obj: Any, depth: int = 0) -> Any:
    """``obj`` with its pending arrays replaced by the arrays (in containers up to 3 levels deep,
    which covers ``{'features': array}``); an array whose state was never set is refused."""
    if isinstance(obj, _PendingArray):
        if obj.array is None:
            raise pickle.UnpicklingError("an array without data")
        return obj.array
    if isinstance(obj, _PendingDtype):
        return obj.resolve()
    if depth >= 3:
        return obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = _finish(value, depth + 1)
    elif isinstance(obj, list):
        obj[:] = [_finish(value, depth + 1) for value in obj]
    elif isinstance(obj, tuple):
        return tuple(_finish(value, depth + 1) for value in obj)
    return obj


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _PendingDtype,
}


class TensorUnpickler(pickle._Unpickler):
    """An unpickler whose only globals rebuild tensors and numeric NumPy arrays.

    It is Python's own pure-Python unpickler: the C one sizes its memo table from the index a
    pickle names, so a 10-byte pickle (``LONG_BINPUT 0x08000000``) made it fill 2 GB; this one
    keeps the memo in a dict. Values hold a few dozen opcodes, so speed is the same. Call
    :func:`loads_safe`, which also swaps the arrays in (:func:`_finish`), rather than ``load``."""

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


@dataclass(frozen=True)
class _SkippedStorage:
    nbytes: int


class _ShapeUnpickler(TensorUnpickler):
    """Reads only the shape of a pickled tensor: the storage bytes are skipped, not parsed."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _skip_storage
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _shape_only
        return super().find_class(module, name)


def _skip_storage(data: bytes) -> _SkippedStorage:
    return _SkippedStorage(len(data))


def _shape_only(storage: Any, offset: int, size: Any, *_: Any) -> _ShapeOnly | None:
    """The declared shape, or None when it declares more values than the storage's bytes could
    hold (each value takes at least one byte), which the full read then refuses by name."""
    shape = tuple(int(n) for n in size)
    if (
        not isinstance(storage, _SkippedStorage)
        or any(n < 0 for n in shape)
        or math.prod(shape) > storage.nbytes
    ):
        return None
    return _ShapeOnly(shape)


def pickled_shape(data: bytes) -> tuple[int, ...] | None:
    """The shape of a raw-pickled tensor without rebuilding it; None for anything else (arrays,
    ``torch.save`` archives, dicts, shapes larger than the pickle), which the caller then reads in full."""
    if data[:4] == _ZIP_MAGIC:
        return None
    try:
        obj = _ShapeUnpickler(io.BytesIO(data)).load()
    except Exception:
        return None
    return obj.shape if isinstance(obj, _ShapeOnly) else None


_TORCH_GLOBALS: list[Any] = [
    (_reconstruct, "numpy.core.multiarray._reconstruct"),
    (_reconstruct, "numpy._core.multiarray._reconstruct"),
    (_NDARRAY, "numpy.ndarray"),
    (_PendingDtype, "numpy.dtype"),
    # torch's unpickler sets a state (BUILD) only on types it allows; this name is not numpy's
    (_PendingArray, "steph.data.safe_load._PendingArray"),
]


def _refused(exc: Exception) -> str:
    """What torch's page-long refusal was about, in one line."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>", text)
    if found:
        return f"{next(g for g in found.groups() if g)} (only tensors and numeric arrays are loaded)"
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    return (
        f"this pickle: {found.group(1).strip()}"
        if found
        else "this pickle (only tensors and numeric arrays are loaded)"
    )


def torch_load_safe(source: Path | bytes) -> Any:
    """``torch.load(weights_only=True)`` that also accepts numeric NumPy arrays (TRIDENT
    ``--saveas pt``), rebuilt as :func:`loads_safe` rebuilds them."""
    target: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        with torch.serialization.safe_globals(_TORCH_GLOBALS):
            return _finish(torch.load(target, map_location="cpu", weights_only=True))
    except pickle.UnpicklingError as exc:  # torch's message is a page long: keep what was refused
        raise pickle.UnpicklingError(f"the safe loader refused {_refused(exc)}") from None


def loads_safe(data: bytes) -> Any:
    """A pickled value of an LMDB store: a ``torch.save`` archive or a raw pickle (tensor or array)."""
    if data[:4] == _ZIP_MAGIC:
        return torch_load_safe(data)
    return _finish(TensorUnpickler(io.BytesIO(data)).load())


class UnsafeTensorError(ValueError):
    """A loaded tensor is not a dense numeric matrix held in its own bytes (sparse, meta,
    quantized, or a shape larger than its storage)."""


_TENSOR_DTYPES = frozenset(
    {
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
    }
)


def checked_tensor(tensor: Tensor, *, what: str | None = None, floating_only: bool = False) -> Tensor:
    """``tensor`` detached, if it is a dense, numeric CPU tensor whose values fit in its storage:
    ``numel * element_size <= storage bytes``, so repeated values (stride 0, overlapping strides)
    cannot make a small file a large matrix. The one check of every tensor read from a user's
    file: feature files and stores here, checkpoints in :func:`steph.checkpoints.load_checked_torch`.

    Args:
        what: the tensor as messages name it (``"tensor 'conv1.weight'"``); by default a message
            begins with what the tensor is (``"a sparse_coo tensor, ..."``).
        floating_only: accept only floating-point dtypes (a model's weights), not bool or integers.

    Raises:
        UnsafeTensorError: a subclass, a sparse, nested, meta or quantized tensor, another
            dtype, or more values than bytes.
    """
    subject = what or "a tensor"
    lead = f"{what} is " if what else ""
    if type(tensor) not in (Tensor, torch.nn.Parameter):
        raise UnsafeTensorError(f"{lead}a {type(tensor).__name__}, not a plain tensor")
    if tensor.layout != torch.strided or tensor.is_nested:
        layout = "nested" if tensor.is_nested else str(tensor.layout).removeprefix("torch.")
        raise UnsafeTensorError(
            f"{lead}a {layout} tensor, not a dense tensor; save a dense one (tensor.to_dense())"
        )
    if tensor.device.type != "cpu":
        raise UnsafeTensorError(f"{subject} on device {tensor.device.type!r}, which holds no values to read")
    if (
        tensor.is_quantized
        or tensor.dtype not in _TENSOR_DTYPES
        or (floating_only and not tensor.is_floating_point())
    ):
        allowed = "floating point" if floating_only else "bool, integer or float"
        raise UnsafeTensorError(
            f"{subject} of dtype {str(tensor.dtype).removeprefix('torch.')}, not {allowed}"
        )
    need = tensor.numel() * tensor.element_size()
    held = tensor.untyped_storage().nbytes()
    if need > held:
        raise UnsafeTensorError(
            f"{subject} of shape {list(tensor.shape)} needs {need} bytes but its storage holds {held}: "
            "it declares values its bytes do not hold (an expanded or overlapping view); "
            "save tensor.contiguous()"
        )
    return tensor.detach()


def as_tensor(obj: Any) -> Tensor | None:
    """A tensor from a tensor, a numeric array, or a dict whose ``features`` holds one; else None.
    Big-endian arrays are converted to the native byte order.

    Raises:
        UnsafeTensorError: as :func:`checked_tensor`.
    """
    if isinstance(obj, dict):
        obj = obj.get("features")
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "fiub" or obj.dtype.fields is not None:
            return None
        if not obj.dtype.isnative:
            obj = obj.astype(obj.dtype.newbyteorder("="))
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, Tensor):
        return checked_tensor(obj)
    return None
