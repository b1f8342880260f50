"""The bundle file: one safetensors file of named tensor *parts* plus a JSON card, verified on load.

Layout of a bundle (format ``stephctl-bundle``, version :data:`FORMAT_VERSION`):

- tensors are named ``<part>::<parameter>``; a part is one state dict (``theta0``,
  ``task_vector/BRCA/fold_0``, ``weights/fold_0``, ...);
- the safetensors header's ``__metadata__`` holds ``format``, ``format_version``, ``kind``
  (``model`` or ``sources``), ``card`` (the model card, JSON text) and ``card_sha256``;
- the card lists every part with the sha256 of its tensors (:func:`part_sha256`).

Reading parses the safetensors header (JSON) and the raw tensors, nothing else: no pickle, no
code. It refuses a file of another format, a newer format version, a card whose hash does not
match, a missing or extra part and a part whose tensors changed (tampering or corruption).
The hashes detect edits and corruption, not a forger who rewrites the card too: compare the
file's sha256 with the one its author published, or verify its signature
(:mod:`~steph.bundles.signing`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..checkpoints import load_state_dict, read_metadata, save_state_dict
from ..errors import ConsistencyError, DataError, MissingArtifactError
from ..fileio import sha256_bytes, sha256_file

FORMAT = "stephctl-bundle"
FORMAT_VERSION = 1
"""Bumped when a reader of the previous version could not use the file; readers refuse newer ones."""
KINDS = ("model", "sources")
SEP = "::"

StateDict = dict[str, Tensor]


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its card, its parts (state dicts) and the file's sha256."""

    path: Path
    kind: str
    card: dict[str, Any]
    parts: dict[str, StateDict]
    sha256: str


def part_sha256(state: Mapping[str, Tensor]) -> str:
    """sha256 over the part's tensors in name order: name, dtype, shape and raw bytes of each.

    Independent of file layout, so the card can name it before the file exists.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        header = json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode()
        digest.update(len(header).to_bytes(8, "little") + header)
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_bundle(
    path: Path, kind: str, parts: Mapping[str, Mapping[str, Tensor]], card: Mapping[str, Any]
) -> str:
    """Write ``parts`` and ``card`` (completed with format, kind and part hashes) atomically.

    Returns:
        The sha256 of the written file.
    """
    if kind not in KINDS:
        raise ValueError(f"bundle kind must be one of {KINDS}, got {kind!r}")
    full = dict(card)
    full.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        kind=kind,
        parts={
            name: {
                "sha256": part_sha256(state),
                "tensors": len(state),
                "values": sum(t.numel() for t in state.values()),
            }
            for name, state in sorted(parts.items())
        },
    )
    text = json.dumps(full, sort_keys=True, default=str)
    tensors = {f"{name}{SEP}{key}": value for name, state in parts.items() for key, value in state.items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "kind": kind,
        "card": text,
        "card_sha256": sha256_bytes(text.encode()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_state_dict(path, tensors, metadata)


def read_bundle(path: Path | str, *, kind: str | None = None) -> Bundle:
    """Read and verify a bundle (see the module docstring for what is refused).

    Raises:
        MissingArtifactError: no such file.
        DataError: not a bundle (not safetensors, or not written by stephctl), or of another kind.
        ConsistencyError: a newer format version, or the card or a part changed after export.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError(f"bundle not found: {path}", hint="give the file `stephctl export` wrote")
    try:
        meta = read_metadata(path)
    except Exception as exc:  # safetensors raises its own error types for any non-safetensors file
        raise DataError(
            f"{path} is not a stephctl bundle (not a safetensors file: {exc})",
            hint="bundles are written by `stephctl export` / `stephctl export-sources`; nothing else is read",
        ) from exc
    if meta.get("format") != FORMAT:
        raise DataError(
            f"{path} is a safetensors file but not a stephctl bundle (format {meta.get('format')!r})",
            hint="bundles are written by `stephctl export` / `stephctl export-sources`",
        )
    _check_version(path, meta.get("format_version"))
    card = _card(path, meta)
    found = str(meta.get("kind"))
    if kind is not None and found != kind:
        other = "stephctl import-sources" if found == "sources" else "stephctl predict --model"
        raise DataError(f"{path} is a {found} bundle, not a {kind} bundle", hint=f"use it with `{other}`")
    tensors = load_state_dict(path, what="bundle", hint="get an intact copy of the bundle from its author")
    parts: dict[str, StateDict] = {}
    for key, value in tensors.items():
        name, sep, param = key.partition(SEP)
        if not sep:
            raise DataError(
                f"{path}: tensor {key!r} belongs to no part", hint="the file was not written by stephctl"
            )
        parts.setdefault(name, {})[param] = value
    _check_parts(path, card, parts)
    return Bundle(path, found, card, parts, sha256_file(path))


def _check_version(path: Path, value: object) -> None:
    try:
        version = int(str(value))
    except ValueError:
        raise DataError(f"{path}: unreadable bundle format version {value!r}") from None
    if version > FORMAT_VERSION:
        from .. import __version__

        raise ConsistencyError(
            f"{path} has bundle format version {version}, newer than this stephctl {__version__} reads "
            f"(up to {FORMAT_VERSION})",
            hint="upgrade stephctl (`pip install -U stephctl` or `uv tool upgrade stephctl`) to read it",
        )


def _card(path: Path, meta: Mapping[str, str]) -> dict[str, Any]:
    text = meta.get("card", "")
    if sha256_bytes(text.encode()) != meta.get("card_sha256"):
        raise ConsistencyError(
            f"{path}: the model card was modified after export (sha256 mismatch); refused",
            hint="get an intact copy of the bundle from its author and compare the file's sha256",
        )
    try:
        card = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: the model card is not JSON: {exc}") from exc
    if not isinstance(card, dict) or not isinstance(card.get("parts"), dict):
        raise DataError(f"{path}: the model card lists no parts", hint="the file was not written by stephctl")
    return card


def _check_parts(path: Path, card: Mapping[str, Any], parts: Mapping[str, StateDict]) -> None:
    listed = card["parts"]
    missing, extra = sorted(set(listed) - set(parts)), sorted(set(parts) - set(listed))
    changed = [
        name
        for name in sorted(set(listed) & set(parts))
        if part_sha256(parts[name]) != listed[name].get("sha256")
    ]
    if missing or extra or changed:
        detail = "; ".join(
            f"{what}: {', '.join(names)}"
            for what, names in (
                ("missing", missing),
                ("not in the card", extra),
                ("sha256 mismatch", changed),
            )
            if names
        )
        raise ConsistencyError(
            f"{path}: bundle parts differ from its card ({detail}); the bundle was modified after export, refused",
            hint="get an intact copy of the bundle from its author and compare the file's sha256",
        )
