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

    On CPU and CUDA (``fused=None``, the default) a step is PyTorch's fused AdamW kernel
    (``torch._fused_adamw_``, what ``torch.optim.AdamW(fused=True)`` runs): one operator per
    device, dtype, learning rate and decay (two a step here: the decayed weights and the rest),
    each with the step count it reads, whatever the number of parameters. Its updates equal
    ``torch.optim.AdamW(fused=True)``'s bit for bit and differ from the single-tensor AdamW (torch's
    CPU default, the reference's) by rounding: a few float32 ulps a step, as the kernel orders
    the same arithmetic differently. Elsewhere, or with ``fused=False``, each line above is one
    multi-tensor operator (``torch._foreach_*``, as ``torch.optim.AdamW(foreach=True)``): 8
    operators a step, each the single-tensor operator per tensor, so that update equals the
    single-tensor one to the bit on CPU. On the 2-core development machine the fused step of a
    tiny ABMIL (10 tensors) took 23 µs against 118 µs for the multi-tensor one.
    """

    def __init__(
        self,
        groups: Sequence[dict[str, Any]],
        *,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        fused: bool | None = None,
    ) -> None:
        self.betas, self.eps, self.fused = betas, eps, fused
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
        # parameters of every group that share a device, dtype, lr and decay take the same operators
        buckets: dict[tuple[torch.device, torch.dtype, float, float], tuple[list[Tensor], list[Tensor]]] = {}
        for group in self.param_groups:
            lr, decay = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                params, grads = buckets.setdefault((p.device, p.dtype, lr, decay), ([], []))
                params.append(p)
                grads.append(p.grad)
        merged: dict[tuple[torch.device, torch.dtype, float], tuple[list[Tensor], list[Tensor]]] = {}
        for (device, dtype, lr, decay), (params, grads) in buckets.items():
            if self._fuses(device):
                self._fused_step(params, grads, lr, decay)
                continue
            if decay != 0:
                torch._foreach_mul_(params, 1 - lr * decay)
            same = merged.setdefault((device, dtype, lr), ([], []))
            same[0].extend(params)
            same[1].extend(grads)
        for (_, _, lr), (params, grads) in merged.items():
            self._foreach_step(params, grads, lr)

    def _fuses(self, device: torch.device) -> bool:
        """Whether parameters on ``device`` take the fused kernel."""
        if self.fused is False or not hasattr(torch, "_fused_adamw_"):
            return False
        return device.type in ("cpu", "cuda")

    def _fused_step(self, params: list[Tensor], grads: list[Tensor], lr: float, decay: float) -> None:
        """The update of parameters of one device, dtype, lr and decay. The kernel reads each
        parameter's step count from a tensor on its device: one per distinct count, filled on
        the device (no copy from the host), shared by the parameters at that count."""
        beta1, beta2 = self.betas
        states = [self._state(p) for p in params]
        steps: dict[int, Tensor] = {}
        for state in states:
            if state["step"] not in steps:
                steps[state["step"]] = torch.full(
                    (), state["step"], dtype=torch.float32, device=params[0].device
                )
        torch._fused_adamw_(
            params,
            grads,
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [],
            [steps[state["step"]] for state in states],
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=decay,
            eps=self.eps,
            amsgrad=False,
            maximize=False,
        )

    def _foreach_step(self, params: list[Tensor], grads: list[Tensor], lr: float) -> None:
        """The update of parameters of one device, dtype and lr, decayed beforehand."""
        beta1, beta2 = self.betas
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
    named_params: Iterable[tuple[str, nn.Parameter]],
    *,
    lr: float,
    weight_decay: float,
    fused: bool | None = None,
    stacked: bool = False,
) -> AdamW:
    """AdamW with weight decay on >= 2-d parameters whose name has none of bn/ln/bias/logit_scale
    (``fused``: see :class:`AdamW`). ``stacked``: every parameter holds several training units'
    along its first dimension (:mod:`~steph.training.stacked`), and the rule reads one unit's
    shape: each unit's update is then the one it gets alone (AdamW is elementwise)."""
    decay, no_decay = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        dims = param.ndim - 1 if stacked else param.ndim
        if dims >= 2 and not any(marker in name for marker in _NO_DECAY_MARKERS):
            decay.append(param)
        else:
            no_decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return AdamW([g for g in groups if g["params"]], lr=lr, fused=fused)


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
