"""Getting encoder weights: strict loading of local files, and the hub only when reachable.

Resolution order for an encoder ``name``: ``--weights FILE`` / ``extract.weights.<name>`` in
stephctl.yaml (a local file, loaded strictly), else the hub id the encoder declares, tried only
when the hub is reachable (``HF_HUB_OFFLINE``/``STEPHCTL_NO_HUB`` unset and huggingface.co
answering within a few seconds). When neither works the error names the file to provide.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints import load_checked_torch
from ..errors import DataError, EncoderUnavailableError
from ..fileio import sha256_file

log = logging.getLogger(__name__)

HUB_HOST = "huggingface.co"
HUB_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}


_HUB_BLOCKED: contextvars.ContextVar[str | None] = contextvars.ContextVar("hub_blocked", default=None)


@contextlib.contextmanager
def hub_blocked(reason: str) -> Iterator[None]:
    """Within the block, nothing is downloaded: :func:`hub_disabled_reason` gives ``reason``."""
    token = _HUB_BLOCKED.set(reason)
    try:
        yield
    finally:
        _HUB_BLOCKED.reset(token)


def hub_disabled_reason() -> str | None:
    """Why the hub must not be contacted (a :func:`hub_blocked` block, offline env variables), or None."""
    if _HUB_BLOCKED.get() is not None:
        return _HUB_BLOCKED.get()
    for var in ("HF_HUB_OFFLINE", "STEPHCTL_NO_HUB"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var} is set"
    return None


def hub_reachable(timeout_s: float = HUB_TIMEOUT_S) -> tuple[bool, str]:
    """Whether huggingface.co can be reached quickly; never hangs longer than ``timeout_s``."""
    reason = hub_disabled_reason()
    if reason:
        return False, reason
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout_s):
            return True, ""
    except OSError as exc:
        return False, f"{HUB_HOST} unreachable ({exc})"


def missing_weights_error(name: str, *, why: str, hint: str) -> EncoderUnavailableError:
    return EncoderUnavailableError(
        f"encoder {name!r} has no weights: {why}",
        hint=f"{hint}; then set `extract: weights: {{{name}: /path/to/file}}` in stephctl.yaml "
        f"or pass `stephctl extract --encoder {name} --weights FILE`",
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``, ``.bin``/``.pt``/``.pth`` file (``state_dict``/``model`` keys unwrapped).

    A ``torch.save`` file is read by :func:`steph.checkpoints.load_checked_torch` (the checks of
    reference checkpoints, integer and bool buffers allowed): nothing it declares is allocated
    before it is checked against the file's size.
    """
    if not path.is_file():
        raise EncoderUnavailableError(
            f"weights file not found: {path}", hint="check extract.weights / --weights"
        )
    hint = "re-download it; it must be a PyTorch state dict (.bin/.pt/.pth) or .safetensors"
    if path.suffix != ".safetensors":
        try:
            return load_checked_torch(path, unwrap=("state_dict", "model"), floating_only=False)
        except DataError as exc:
            raise EncoderUnavailableError(f"weights file {exc.message}", hint=exc.hint or hint) from exc
    try:
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    except Exception as exc:  # safetensors raises several types on malformed files
        raise EncoderUnavailableError(
            f"weights file {path} cannot be read: {type(exc).__name__}: {exc}", hint=hint
        ) from exc


def load_strict(model: nn.Module, path: Path, *, name: str) -> nn.Module:
    """Load ``path`` into ``model`` with ``strict=True``; a mismatch names the keys."""
    state = read_state_dict(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:4]
        raise EncoderUnavailableError(
            f"weights file {path} does not fit the {name!r} architecture: {' '.join(first)}",
            hint=f"give the original weights file of {name} (not a fine-tuned or converted copy)",
        ) from exc
    return model


def build_from_file_or_hub(
    name: str,
    weights: Path | None,
    *,
    architecture: Callable[[], nn.Module],
    hub_id: str,
    hub_kwargs: Mapping[str, Any],
    hint: str,
) -> nn.Module:
    """The usual foundation-model factory: strict local load, else timm ``hf-hub:`` download."""
    if weights is not None:
        return load_strict(architecture(), Path(weights), name=name)
    ok, why = hub_reachable()
    if not ok:
        raise missing_weights_error(
            name, why=f"no local weights file and the hub cannot be used ({why})", hint=hint
        )
    import timm

    log.info("downloading %s from %s", name, hub_id)
    try:
        return timm.create_model(hub_id, pretrained=True, **dict(hub_kwargs))
    except Exception as exc:  # huggingface_hub raises HTTP, gated-repo and OS errors
        raise missing_weights_error(
            name, why=f"download of {hub_id} failed: {type(exc).__name__}: {exc}", hint=hint
        ) from exc


def weights_identity(weights: Path | None, default: str) -> str:
    """``sha256:<hex> (<file name>)`` for a local file, else the encoder's default identity."""
    if weights is None:
        return default
    path = Path(weights)
    if not path.is_file():
        raise EncoderUnavailableError(
            f"weights file not found: {path}", hint="check extract.weights / --weights"
        )
    return f"sha256:{sha256_file(path)} ({path.name})"
