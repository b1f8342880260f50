"""Patch encoders: a registry of :class:`EncoderSpec` declarations and a factory.

Built-ins (``tiny-cnn``, ``uni2-h``, ``uni``, ``h-optimus-0``, ``virchow2``,
``prov-gigapath``) register through the same entry-point group as plugins, and any timm
model is available as ``timm:<model>``.

Writing a plugin encoder: declare an entry point in your package's ``pyproject.toml``::

    [project.entry-points."stephctl.encoders"]
    my-encoder = "my_package.encoders:register"

where ``register(registry)`` calls ``registry.add("my-encoder", EncoderSpec(...))``. The spec
declares ``name``, ``embed_dim``, ``input_size``, ``mean``/``std``, ``precision``,
``default_weights`` (its weights identity when no file is given, e.g. ``hf-hub:org/repo`` or
``random-init seed 0``) and ``build(weights: Path | None, device) -> nn.Module``, a lazy
factory whose module maps a normalised ``[B, 3, S, S]`` float batch to ``[B, embed_dim]``.
``build`` raises :class:`~steph.errors.EncoderUnavailableError` when weights are missing;
heavy imports belong inside it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..registry import Registry
from .base import Encoder, EncoderSpec, resolve_dtype
from .timm_any import FAMILY_ROW, is_timm_name, timm_spec
from .weights import weights_identity

__all__ = [
    "ENCODERS",
    "Encoder",
    "EncoderSpec",
    "create_encoder",
    "get_encoder_spec",
    "list_encoders",
]

ENCODERS: Registry[EncoderSpec] = Registry(
    "encoder",
    "stephctl.encoders",
    builtin="steph.extractors.builtin:register",
    list_hint=", timm:<any timm model>; `stephctl extract --list-encoders` shows details",
)


def get_encoder_spec(name: str) -> EncoderSpec:
    """The declaration of encoder ``name`` (registry name or ``timm:<model>``).

    Raises:
        UnknownNameError: no such encoder; the message lists the known ones.
    """
    if is_timm_name(name):
        return timm_spec(name)
    return ENCODERS.get(name)


def create_encoder(
    name: str,
    *,
    weights: Path | str | None = None,
    device: torch.device | str = "cpu",
    precision: str = "auto",
) -> Encoder:
    """Build encoder ``name`` on ``device`` with a local ``weights`` file or its default weights.

    Example:
        >>> enc = create_encoder("tiny-cnn")
        >>> import numpy as np
        >>> enc.encode(np.zeros((2, 256, 256, 3), np.uint8)).shape
        (2, 128)

    Raises:
        UnknownNameError: unknown encoder.
        EncoderUnavailableError: the weights cannot be found, read or downloaded.
    """
    spec = get_encoder_spec(name)
    device = torch.device(device)
    path = Path(weights).expanduser() if weights is not None else None
    identity = weights_identity(path, spec.default_weights)
    model = spec.build(path, device)
    return Encoder(
        spec, model, device=device, dtype=resolve_dtype(precision, spec, device), weights_identity=identity
    )


def list_encoders() -> list[dict[str, object]]:
    """One row per registered encoder (plus the ``timm:<model>`` family), with its origin."""
    rows: list[dict[str, object]] = []
    for name, spec in ENCODERS.items():
        row = spec.describe()
        row["origin"] = ENCODERS.origin(name).describe() or "stephctl"
        rows.append(row)
    rows.append({**FAMILY_ROW, "origin": "stephctl"})
    return rows
