"""The merge methods shipped with stephctl (entry point ``stephctl.merge_methods: builtin``)."""

from __future__ import annotations

from typing import Any

from .adamerging import AdaMerging, TiesAdaMerging
from .baselines import ModelAverage, TaskArithmetic, Ties
from .roupkt import RouPKT
from .steph_method import Steph

BUILTIN_METHODS = (Steph, ModelAverage, TaskArithmetic, Ties, AdaMerging, TiesAdaMerging, RouPKT)


def register(registry: Any) -> None:
    """Add every built-in method to ``registry`` (a :class:`steph.registry.Registry`)."""
    for cls in BUILTIN_METHODS:
        registry.add(cls.name, cls())
