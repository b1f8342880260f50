"""State dicts on disk: safetensors, atomically written, identified by sha256.

Also reads the authors' reference checkpoints (``.pth`` dicts whose key ``model`` holds the
state dict) with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from .errors import DataError, MissingArtifactError
from .fileio import atomic_path, sha256_bytes, sha256_file

StateDict = dict[str, Tensor]


def save_state_dict(
    path: Path | str, state: Mapping[str, Tensor], metadata: Mapping[str, object] | None = None
) -> str:
    """Write ``state`` as safetensors (contiguous CPU copies) and return the file's sha256."""
    path = Path(path)
    data = state_bytes(state, metadata)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return sha256_file(path)


def state_bytes(state: Mapping[str, Tensor], metadata: Mapping[str, object] | None = None) -> bytes:
    """The exact bytes :func:`save_state_dict` writes for ``state`` and ``metadata``."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    return _canonical_header(save(tensors, metadata=meta))


def state_sha256(state: Mapping[str, Tensor], metadata: Mapping[str, object] | None = None) -> str:
    """sha256 of the file :func:`save_state_dict` would write, without writing it."""
    return sha256_bytes(state_bytes(state, metadata))


def _canonical_header(data: bytes) -> bytes:
    """The same safetensors file with its ``__metadata__`` keys sorted.

    safetensors keeps metadata in a hash map whose iteration order changes from process to
    process, so without this the same tensors and metadata give different bytes (and sha256).
    """
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    if len(header.get("__metadata__") or {}) < 2:
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def load_state_dict(path: Path | str, *, what: str = "weights", hint: str | None = None) -> StateDict:
    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError(f"{what} not found: {path}", hint=hint)
    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(
            f"{what} at {path} cannot be read: {exc}",
            hint=hint or "delete the file and rerun the stage that writes it",
        ) from exc


def read_metadata(path: Path | str) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def load_reference_checkpoint(path: Path | str) -> StateDict:
    """Load a reference ``.pth`` checkpoint (a dict with key ``model``, or a bare state dict),
    checked as :func:`load_checked_torch` describes; a ``module.`` key prefix is dropped.

    Raises:
        MissingArtifactError: no such file.
        DataError: see :func:`load_checked_torch`.
    """
    state = load_checked_torch(path, unwrap=("model",))
    return {key.removeprefix("module."): tensor for key, tensor in state.items()}


def load_checked_torch(
    path: Path | str, *, unwrap: tuple[str, ...] = ("model",), floating_only: bool = True
) -> StateDict:
    """The state dict of a ``torch.save`` file from outside, checked before it is copied into memory.

    Nothing the file declares is trusted before it is checked against the file itself: it must
    be a PyTorch zip checkpoint whose records are stored uncompressed and add up to no more than
    the file; it is loaded memory-mapped (``weights_only``), and every tensor must pass
    :func:`steph.data.safe_load.checked_tensor`: a dense CPU tensor (floating point when
    ``floating_only``; else bool, integer or float) whose values all lie in its own storage (no
    stride-0 expansion of a few bytes into gigabytes), and all of them together must fit in the file. Only then are the tensors copied.
    ``unwrap``: keys of a wrapping dict whose value is the state dict (tried in order).

    Raises:
        MissingArtifactError: no such file.
        DataError: not a loadable checkpoint, not a state dict, a tensor that declares more
            values than the file holds, or not enough memory to load it.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError(f"checkpoint not found: {path}")
    _check_zip_records(path)
    try:
        obj = _torch_load(path)
    except Exception as exc:  # torch raises many types for malformed pickles
        raise DataError(f"{path} is not a loadable PyTorch checkpoint: {exc}") from exc
    for key in unwrap:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        wrapped = " or ".join(repr(k) for k in unwrap)
        raise DataError(f"{path}: expected a state dict or a dict with key {wrapped} holding one")
    from .data.safe_load import UnsafeTensorError, checked_tensor

    size = path.stat().st_size
    total = 0
    for key, tensor in obj.items():
        try:
            checked_tensor(tensor, what=f"tensor {str(key)!r}", floating_only=floating_only)
        except UnsafeTensorError as exc:
            raise DataError(
                f"{path}: {exc}",
                hint="the file is not a checkpoint written by torch.save of a model; ask its author for the original",
            ) from None
        total += tensor.numel() * tensor.element_size()
    if total > size:
        raise DataError(
            f"{path}: its tensors declare {total:,} bytes, more than the file's {size:,}",
            hint="the file is not a checkpoint written by torch.save; ask its author for the original",
        )
    try:
        return {str(k): v.clone(memory_format=torch.contiguous_format) for k, v in obj.items()}
    except (MemoryError, RuntimeError) as exc:
        raise DataError(
            f"{path}: not enough memory to load its {total:,} bytes of tensors ({type(exc).__name__})",
            hint="free memory or use a machine with more",
        ) from exc


def _torch_load(path: Path) -> object:
    """``torch.load(weights_only=True)``, memory-mapped where the file allows it (older torch wrote
    records that cannot be mapped; their reading is bounded by :func:`_check_zip_records` anyway)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        return torch.load(str(path), map_location="cpu", weights_only=True)


def _check_zip_records(path: Path) -> None:
    """Refuse a checkpoint that is not a zip of stored records adding up to at most the file."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(
            f"{path} is not a PyTorch checkpoint (not a zip archive: {exc})",
            hint="save it with torch.save (PyTorch >= 1.6 writes zip checkpoints)",
        ) from exc
    packed = [r.filename for r in records if r.compress_type != zipfile.ZIP_STORED]
    declared = sum(r.file_size for r in records)
    if packed or declared > path.stat().st_size:
        raise DataError(
            f"{path}: "
            + (
                f"compressed records ({', '.join(packed[:3])})"
                if packed
                else f"records declare {declared:,} bytes, more than the file's {path.stat().st_size:,}"
            )
            + "; torch.save writes neither",
            hint="the file is not a checkpoint written by torch.save; ask its author for the original",
        )
