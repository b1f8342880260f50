"""The one autograd node behind the losses computed with their gradient (SurvMLE, regularisers)."""

from __future__ import annotations

import doctest

import torch

from steph.models import closed_form as module
from steph.models.closed_form import closed_form


def test_the_docstring_example_holds() -> None:
    assert doctest.testmod(module).failed == 0


def test_gradients_come_back_in_each_inputs_dtype_and_only_where_needed() -> None:
    """``terms``' gradients, times the incoming gradient, in each input's dtype; none for an
    input that needs none or that ``terms`` gives none for; no node at all without a gradient."""
    a = torch.tensor([1.0, -2.0], dtype=torch.bfloat16, requires_grad=True)
    b = torch.tensor([3.0, 4.0], requires_grad=True)
    frozen = torch.tensor([5.0])
    calls: list[bool] = []

    def terms(gradient: bool) -> tuple[torch.Tensor, torch.Tensor | None, None, torch.Tensor | None]:
        calls.append(gradient)
        loss = (a.float() * b).sum() + frozen.sum()
        if not gradient:
            return loss, None, None, None
        return loss, b.detach().clone(), None, torch.ones(1)

    loss = closed_form(terms, a, b, frozen)
    (3.0 * loss).backward()
    assert calls == [True] and float(loss.detach()) == 1.0 * 3.0 - 2.0 * 4.0 + 5.0
    assert a.grad is not None and a.grad.dtype == torch.bfloat16
    assert a.grad.float().tolist() == [9.0, 12.0]
    assert b.grad is None and frozen.grad is None  # no gradient given, none needed
    with torch.no_grad():
        assert float(closed_form(terms, a, b, frozen)) == float(loss.detach())
    assert calls == [True, False]
