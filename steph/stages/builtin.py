"""The stages shipped with stephctl (entry point ``stephctl.stages: builtin``)."""

from __future__ import annotations

from typing import Any

from .evaluate import STAGE as EVALUATE
from .extract import STAGE as EXTRACT
from .merge import STAGE as MERGE
from .task_vector import STAGE as TASK_VECTOR
from .train_source import STAGE as TRAIN_SOURCE
from .transfer import STAGE as TRANSFER

BUILTIN_STAGES = (EXTRACT, TRAIN_SOURCE, TASK_VECTOR, MERGE, EVALUATE, TRANSFER)


def register(registry: Any) -> None:
    """Add every built-in stage to ``registry`` (a :class:`steph.registry.Registry`)."""
    for stage in BUILTIN_STAGES:
        registry.add(stage.name, stage)
