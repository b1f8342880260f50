"""Optimiser and learning-rate schedule of the reference protocol (STEPH_SPEC section 3.1)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

_NO_DECAY_MARKERS = ("bn", "ln", "bias", "logit_scale")


def build_optimizer(
    named_params: Iterable[tuple[str, nn.Parameter]], *, lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW with weight decay on >= 2-d parameters whose name has none of bn/ln/bias/logit_scale."""
    decay, no_decay = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        if param.ndim >= 2 and not any(marker in name for marker in _NO_DECAY_MARKERS):
            decay.append(param)
        else:
            no_decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the base LR, then a half cosine down to 0 at ``total_steps``.

    factor(s) = s / warmup                                 for s < warmup
              = 0.5 (1 + cos(pi (s - warmup) / (total - warmup)))   otherwise
    """
    warmup_steps = max(0, int(warmup_steps))
    total_steps = max(1, int(total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
