"""The stages shipped with stephctl (entry point ``stephctl.stages: builtin``): every module of
this package that defines ``STAGE``.

Adding a built-in stage is therefore one stage module here (its ``STAGE``), one command module
(``stephctl/commands/<name>.py``) and one registration line, the command's entry point in
pyproject.toml (docs/extending.md, "Adding a built-in stage").
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

NOT_STAGES = frozenset({"base", "builtin"})
"""Modules of the package that are the contract itself, not stages."""


def stage_modules() -> list[str]:
    """Names of the stage modules of :mod:`steph.stages`, sorted."""
    from . import __path__ as path

    return sorted(info.name for info in pkgutil.iter_modules(path) if info.name not in NOT_STAGES)


def builtin_stages() -> list[Any]:
    """The ``STAGE`` of every stage module (a module without one is not a stage)."""
    found = []
    for name in stage_modules():
        stage = getattr(importlib.import_module(f"{__package__}.{name}"), "STAGE", None)
        if stage is not None:
            found.append(stage)
    return found


def register(registry: Any) -> None:
    """Add every built-in stage to ``registry`` (a :class:`steph.registry.Registry`)."""
    for stage in builtin_stages():
        registry.add(stage.name, stage)
