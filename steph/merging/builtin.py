"""The merge methods shipped with stephctl (entry point ``stephctl.merge_methods: builtin``).

Each is registered as its spec (:data:`steph.merging.catalog.BUILTIN`) and imported, with torch,
the first time its model is needed (:meth:`steph.registry.Registry.add_lazy`).
"""

from __future__ import annotations

import importlib
from functools import partial
from typing import Any

from .catalog import BUILTIN


def register(registry: Any) -> None:
    """Add every built-in method to ``registry`` (a :class:`steph.registry.Registry`), lazily."""
    for spec, target in BUILTIN:
        registry.add_lazy(spec.name, partial(_instance, target), spec())


def implementation(target: str) -> type:
    """The class at ``module:Class`` (imports its module)."""
    module, name = target.split(":")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def _instance(target: str) -> Any:
    return implementation(target)()


def __getattr__(name: str) -> Any:
    """``BUILTIN_METHODS``: the implementing classes, in :data:`~steph.merging.catalog.BUILTIN`
    order (importing them all)."""
    if name == "BUILTIN_METHODS":
        return tuple(implementation(target) for _, target in BUILTIN)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
