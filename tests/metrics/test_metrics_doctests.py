"""The formulas' doctest examples in the metric and evaluation modules run and pass."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "steph.metrics.harrell",
    "steph.metrics.km",
    "steph.metrics.logrank",
    "steph.evaluation.fold",
    "steph.evaluation.summary",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
