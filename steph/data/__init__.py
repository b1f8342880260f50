"""Cohorts (labels and splits), feature readers and the patient bag store."""

from __future__ import annotations

from .bags import BagStore, check_features, open_bags
from .cohort import Cohort, Patient, Split, load_cohort, load_split
from .features import feature_shape, read_features

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
