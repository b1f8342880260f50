"""Devices, seeds and determinism."""

from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Callable

import numpy as np
import torch

from .errors import ConfigError

_cudnn_available: Callable[[], bool] = torch.backends.cudnn.is_available
"""``torch.backends.cudnn.is_available``, which torch leaves unannotated, under a typed name."""

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
    """Deterministic kernels (bit-identical reruns on CPU; on GPU where PyTorch supports it).

    ``torch.use_deterministic_algorithms`` also imports ``torch._inductor.config`` (and with it
    TorchDynamo) only to set inductor's own flag: 1.4 CPU-seconds per process with cached
    bytecode, about 60 s without, measured on the 2-core development machine under load. stephctl
    compiles nothing, so the flag is set on the ATen side alone, and on inductor's config only
    when something has already imported it.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_flag = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_flag is None:  # a torch without the private setter: the public call
        torch.use_deterministic_algorithms(enabled, warn_only=True)
    else:
        set_flag(enabled, warn_only=True)
        inductor_config = sys.modules.get("torch._inductor.config")
        if inductor_config is not None:
            # a module found in sys.modules is typed as a bare ModuleType (its config setter is its own)
            inductor_config.deterministic = enabled  # type: ignore[attr-defined]
    if _cudnn_available():
        torch.backends.cudnn.deterministic = enabled
        torch.backends.cudnn.benchmark = not enabled
