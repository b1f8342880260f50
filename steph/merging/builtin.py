"""The merge methods shipped with stephctl (entry point ``stephctl.merge_methods: builtin``)."""

from __future__ import annotations

from typing import Any

from .adamerging import AdaMerging, IsoCAdaMerging, IsoCTSAdaMerging, TiesAdaMerging
from .baselines import IsoC, IsoCTS, ModelAverage, TaskArithmetic, Ties
from .roupkt import RouPKT
from .steph_method import Steph
from .surgery import SurgeryAdaMerging

BUILTIN_METHODS = (
    Steph,
    ModelAverage,
    TaskArithmetic,
    Ties,
    IsoC,
    IsoCTS,
    AdaMerging,
    TiesAdaMerging,
    IsoCAdaMerging,
    IsoCTSAdaMerging,
    SurgeryAdaMerging,
    RouPKT,
)


def register(registry: Any) -> None:
    """Add every built-in method to ``registry`` (a :class:`steph.registry.Registry`)."""
    for cls in BUILTIN_METHODS:
        registry.add(cls.name, cls())
