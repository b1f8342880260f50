"""The NaN/inf check of bags read from disk (``steph.data.bags._all_finite``)."""

from __future__ import annotations

import math

import pytest
import torch

from steph.data.bags import _all_finite


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_any_non_finite_value_is_found(bad: float) -> None:
    x = torch.randn(50, 8)
    x[17, 3] = bad
    assert not _all_finite(x)


def test_huge_finite_values_whose_sum_overflows_are_finite() -> None:
    x = torch.full((4, 4), 3e38)  # the float32 sum is inf, every value is finite
    assert not math.isfinite(float(x.sum()))
    assert _all_finite(x)


def test_opposite_infinities_are_found() -> None:
    assert not _all_finite(torch.tensor([[math.inf, -math.inf]]))
    assert _all_finite(torch.randn(10, 3))
