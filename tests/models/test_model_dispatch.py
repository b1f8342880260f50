"""The dispatch counter behind operators-per-step (benchmarks/bench_host.py, tests/training)."""

from __future__ import annotations

import torch

from steph.models.dispatch import DispatchCounter


def test_each_aten_operator_is_counted_once_forward_and_backward() -> None:
    x = torch.ones(3, requires_grad=True)
    with DispatchCounter() as forward:
        y = (x * 2).sum()  # mul, sum
    assert forward.count == 2
    with DispatchCounter() as nothing:
        pass
    assert nothing.count == 0
    with DispatchCounter() as backward:
        y.backward()
    assert backward.count > 0 and torch.equal(x.grad, torch.full((3,), 2.0))
