"""Optimiser and learning-rate schedule of the reference protocol (docs/train-source.md, "Protocol").

The reference trains with ``torch.optim.AdamW`` and a ``LambdaLR`` cosine schedule. Both are
reimplemented here, update for update: ``torch.optim.Optimizer`` imports TorchDynamo the first
time it is built or stepped (``torch._disable_dynamo``): 1.6-2.0 CPU-seconds of single-threaded
start-up and 153 MiB of RSS in every training and merging process (measured on the 2-core
development machine, docs/benchmarks.md), and stephctl compiles nothing. The updates equal
PyTorch's bit for bit on CPU (``tests/training/test_training_optim.py`` steps both side by side).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

_NO_DECAY_MARKERS = ("bn", "ln", "bias", "logit_scale")


class AdamW:
    """AdamW (Loshchilov and Hutter, 2019) with PyTorch's defaults and order of operations.

    For each parameter with a gradient ``g`` at its step ``t`` (parameters without a gradient
    are skipped and keep their step count, as in PyTorch):

        theta <- theta (1 - lr wd)
        m <- m + (1 - beta1) (g - m)                     (``lerp``)
        v <- beta2 v + (1 - beta2) g^2
        theta <- theta - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    ``param_groups`` holds dicts with ``params``, ``lr``, ``weight_decay`` and ``initial_lr``, the
    layout ``torch.amp.GradScaler`` reads to unscale gradients (fp16 training).

    A step updates all the parameters of one device, dtype and learning rate, whatever their
    group, with one multi-tensor operator per line above (``torch._foreach_*``, as
    ``torch.optim.AdamW(foreach=True)``, the default on CUDA; the decay once per group that has
    one): 8 operators a step instead of 8 a parameter, which on a GPU are one multi-tensor
    kernel each instead of one kernel per tensor. Each does per tensor what the single-tensor
    operator does, so the update is the same to the bit on CPU.
    """

    def __init__(
        self,
        groups: Sequence[dict[str, Any]],
        *,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.betas, self.eps = betas, eps
        self.param_groups: list[dict[str, Any]] = [
            {
                "params": list(g["params"]),
                "weight_decay": float(g.get("weight_decay", 0.0)),
                "lr": lr,
                "initial_lr": lr,
            }
            for g in groups
        ]
        if not any(g["params"] for g in self.param_groups):
            raise ValueError("AdamW got an empty parameter list")
        self.state: dict[Tensor, dict[str, Any]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        # parameters of every group that share a device, dtype and lr take the same operators
        buckets: dict[tuple[torch.device, torch.dtype, float], tuple[list[Tensor], list[Tensor]]] = {}
        for group in self.param_groups:
            lr, decay = group["lr"], group["weight_decay"]
            decayed: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                params, grads = buckets.setdefault((p.device, p.dtype, lr), ([], []))
                params.append(p)
                grads.append(p.grad)
                if decay != 0:
                    decayed.setdefault((p.device, p.dtype), []).append(p)
            for same_kind in decayed.values():
                torch._foreach_mul_(same_kind, 1 - lr * decay)
        for (_, _, lr), (params, grads) in buckets.items():
            states = [self._state(p) for p in params]
            m = [state["exp_avg"] for state in states]
            v = [state["exp_avg_sq"] for state in states]
            steps = [state["step"] for state in states]
            torch._foreach_lerp_(m, grads, 1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, [(1 - beta2**t) ** 0.5 for t in steps])
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(params, m, denom, [-(lr / (1 - beta1**t)) for t in steps])

    def _state(self, p: Tensor) -> dict[str, Any]:
        """``p``'s moments and step count, the step counted (a new state starts at step 1)."""
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = {
                "step": 0,
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
        state["step"] += 1
        return state


def build_optimizer(
    named_params: Iterable[tuple[str, nn.Parameter]], *, lr: float, weight_decay: float
) -> AdamW:
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
    return AdamW([g for g in groups if g["params"]], lr=lr)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """The schedule's factor after ``step`` optimiser steps (see :class:`WarmupCosine`)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


class WarmupCosine:
    """The learning rate of every group is ``initial_lr * factor(n)`` after ``n`` calls of
    :meth:`step` (n = 0 when built), as ``torch.optim.lr_scheduler.LambdaLR`` sets it:

        factor(s) = s / warmup                                        for s < warmup
                  = 0.5 (1 + cos(pi min(1, (s - warmup) / (total - warmup))))   otherwise
    """

    def __init__(self, optimizer: AdamW, *, warmup_steps: int, total_steps: int) -> None:
        self.optimizer = optimizer
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))
        self.last_step = 0
        self._apply()

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def _apply(self) -> None:
        factor = warmup_cosine(self.last_step, self.warmup_steps, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
