"""Devices, seeds and determinism."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from .errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` = the first CUDA device when available, else CPU; ``cuda`` without a GPU is an error."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {spec!r} requested but no CUDA GPU is available", hint="use --device cpu or auto"
        )
    try:
        return torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"invalid device {spec!r}: {exc}", hint="use auto, cpu, cuda or cuda:N") from exc


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a CPU generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Deterministic kernels (bit-identical reruns on CPU; on GPU where PyTorch supports it)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.deterministic = enabled
        torch.backends.cudnn.benchmark = not enabled
