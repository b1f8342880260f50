"""Mixed precision for training, merging and prediction (``train.precision``).

``auto`` is bf16 on a CUDA device that supports it (else fp16) and fp32 everywhere else; CPU
always runs fp32 (a bf16/fp16 request there is logged and runs fp32). Under bf16/fp16 the
forward runs in :func:`torch.autocast`; the loss (SurvMLE and any ``aux_loss``) is computed in
fp32 from fp32-cast logits, and merge methods build their merged weights in fp32
(:meth:`steph.merging.modules.VectorStack.merge` disables autocast). fp16 scales the loss
(:class:`torch.amp.GradScaler`); bf16 needs no scaling.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager

import torch

from ..config.train import PRECISIONS
from ..errors import ConfigError

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision that runs: ``fp32``, ``bf16`` or ``fp16`` (see the module docstring).

    >>> resolve_precision("auto", torch.device("cpu"))
    'fp32'
    >>> resolve_precision("bf16", torch.device("cpu"))
    'fp32'
    """
    if requested not in PRECISIONS:
        raise ConfigError(
            f"train.precision must be one of {', '.join(PRECISIONS)}, got {requested!r}",
            hint="train.precision: auto (bf16 on CUDA, fp32 on CPU)",
        )
    if device.type != "cuda":
        if requested in _DTYPES:
            log.warning("train.precision %s requested on %s: CPU runs fp32", requested, device)
        return "fp32"
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return requested


def autocast(precision: str, device: torch.device) -> AbstractContextManager[object]:
    """The autocast context of a resolved ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler that is active for fp16 only (a pass-through otherwise)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
