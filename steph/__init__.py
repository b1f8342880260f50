"""steph: the library behind stephctl (STEPH, CVPR 2026, end to end).

Importing ``steph`` is cheap: torch, timm and openslide are imported only by the modules that
need them.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("stephctl")
except metadata.PackageNotFoundError:  # pragma: no cover - source tree without metadata
    __version__ = "0.1.0"

__all__ = ["__version__"]
