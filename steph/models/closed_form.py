"""Losses computed together with their gradient, in closed form: one autograd node whose backward
is one multiplication per input, where autograd's backward through the formula dispatches tens
of operators (SurvMLE from the logits, STEPH's and the AdaMerging family's regularisers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .abmil import as_dtype

Terms = Callable[[bool], Sequence[Tensor | None]]
"""``terms(gradient)`` -> ``(loss, gradient in inputs[0], gradient in inputs[1], ...)``: the
gradients are None unless ``gradient`` (and None for an input the loss does not depend on)."""


class _ClosedForm(torch.autograd.Function):
    """The loss of ``terms``, whose backward multiplies the gradients ``terms`` computed with it
    by the incoming one (each in its input's dtype)."""

    @staticmethod
    def forward(ctx: Any, terms: Terms, *inputs: Tensor) -> Tensor:
        loss, *grads = terms(True)
        ctx.dtypes = tuple(t.dtype for t in inputs)
        ctx.save_for_backward(*grads)
        return cast(Tensor, loss)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        needs = ctx.needs_input_grad[1:]
        grads = (
            as_dtype(grad_loss * grad, dtype) if grad is not None and need else None
            for grad, need, dtype in zip(ctx.saved_tensors, needs, ctx.dtypes, strict=True)
        )
        return (None, *grads)


_apply = cast("Callable[..., Tensor]", _ClosedForm.apply)  # torch leaves apply untyped


def closed_form(terms: Terms, *inputs: Tensor) -> Tensor:
    """The loss of ``terms`` (see :data:`Terms`), computed from ``inputs``: where one of them needs
    a gradient, as one autograd node whose gradients are those ``terms`` computes; else the loss
    alone (``terms(False)``).

    >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> loss = closed_form(lambda g: ((x * x).sum(), 2 * x if g else None), x)
    >>> loss.backward()
    >>> float(loss.detach()), x.grad.tolist()
    (5.0, [2.0, 4.0])
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return _apply(terms, *inputs)
    return cast(Tensor, terms(False)[0])
