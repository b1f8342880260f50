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
    """Load a reference ``.pth`` checkpoint (a dict with key ``model``, or a bare state dict)."""
    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for malformed pickles
        raise DataError(f"{path} is not a loadable PyTorch checkpoint: {exc}") from exc
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise DataError(f"{path}: expected a state dict or a dict with key 'model' holding one")
    return {str(k).removeprefix("module."): v for k, v in state.items()}
