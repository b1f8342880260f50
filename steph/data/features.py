"""Reading per-slide patch features, whatever tool wrote them (see :mod:`.stores`).

:func:`read_slide` returns float32 ``[K, D]`` on the CPU; :func:`slide_shape` answers ``(K, D)``
cheaply where the format allows it (HDF5 and NumPy headers); :func:`slide_encoder` is the encoder
a file records, if any. :func:`read_features` and :func:`feature_shape` do the same for a file path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .stores import SlideRef, store_for

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["SlideRef", "feature_shape", "read_features", "read_slide", "slide_encoder", "slide_shape"]


def read_slide(ref: SlideRef) -> Tensor:
    """All patch features of one slide, ``[K, D]`` float32 on the CPU.

    Raises:
        DataError: unsupported store, unreadable file or key, no features or the wrong rank.
    """
    return store_for(ref.path).read(ref)


def slide_shape(ref: SlideRef) -> tuple[int, int]:
    """``(K, D)`` of one slide (raises as :func:`read_slide`)."""
    return store_for(ref.path).shape(ref)


def slide_encoder(ref: SlideRef) -> str | None:
    """The encoder recorded with the slide's features, or None."""
    return store_for(ref.path).encoder(ref)


def _file_ref(path: Path) -> SlideRef:
    return store_for(path).ref(path, path.stem)


def feature_shape(path: Path) -> tuple[int, int]:
    """``(K, D)`` of a feature file.

    Raises:
        DataError: the file cannot be read, has no features or has the wrong rank.
    """
    return slide_shape(_file_ref(path))


def read_features(path: Path) -> Tensor:
    """All patch features of one slide file, ``[K, D]`` float32 on the CPU.

    Raises:
        DataError: the file cannot be read, has no features or has the wrong rank.
    """
    return read_slide(_file_ref(path))
