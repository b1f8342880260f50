"""From slides to patch features: the HDF5 format, the reader/encoder overlap, one slide's job."""

from __future__ import annotations

from .h5format import FORMAT, FeatureWriter, is_complete, read_attrs, write_features
from .slide_job import SlideOutcome, extract_slide

__all__ = [
    "FORMAT",
    "FeatureWriter",
    "SlideOutcome",
    "extract_slide",
    "is_complete",
    "read_attrs",
    "write_features",
]
