"""Whole-slide images: opening, MPP resolution, tissue detection, patch grids, manifests."""

from __future__ import annotations

from .grid import PatchGrid, level0_patch_size, make_grid
from .manifest import SlideEntry, read_manifest, read_selection, resolve_shard, select, shard
from .mpp import SlideMpp, resolve_mpp
from .reader import Slide, read_thumbnail
from .tissue import tissue_mask

__all__ = [
    "PatchGrid",
    "Slide",
    "SlideEntry",
    "SlideMpp",
    "level0_patch_size",
    "make_grid",
    "read_manifest",
    "read_selection",
    "read_thumbnail",
    "resolve_mpp",
    "resolve_shard",
    "select",
    "shard",
    "tissue_mask",
]
