"""Cohorts (labels and splits), feature readers and the patient bag store.

The names are imported on first use: ``stephctl status`` and ``check`` read labels, splits and
feature headers without importing torch (which the bag store needs).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bags import BagStore, check_features, open_bags
    from .cohort import Cohort, Patient, Split, load_cohort, load_split
    from .features import feature_shape, read_features

_WHERE = {
    "BagStore": "bags",
    "check_features": "bags",
    "open_bags": "bags",
    "Cohort": "cohort",
    "Patient": "cohort",
    "Split": "cohort",
    "load_cohort": "cohort",
    "load_split": "cohort",
    "feature_shape": "features",
    "read_features": "features",
}

__all__ = [
    "BagStore",
    "Cohort",
    "Patient",
    "Split",
    "check_features",
    "feature_shape",
    "load_cohort",
    "load_split",
    "open_bags",
    "read_features",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
