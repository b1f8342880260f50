"""From slides to patch features: the HDF5 format, the reader/encoder overlap, one slide's job.

:mod:`.slide_job` (slide readers, tissue detection, scipy, PIL) is imported on first use of
``extract_slide`` or ``SlideOutcome``: commands that only read feature files (``merge``, whose
source bundles read their attributes) do not pay for it (0.2 s and 14 MB per process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .h5format import FORMAT, FeatureWriter, is_complete, read_attrs, write_features

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name in ("SlideOutcome", "extract_slide"):
        from . import slide_job

        return getattr(slide_job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
