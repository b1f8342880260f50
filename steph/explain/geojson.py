"""Patch attention as a QuPath GeoJSON FeatureCollection (File > Import objects, or drag and drop).

The format is the one QuPath 0.4+ reads and writes (``PathObjectTypeAdapters``): a UUID ``id``,
``properties.objectType``, ``properties.color`` (the object's own colour, ``[r, g, b]``),
``classification {name, color}`` and ``measurements`` as a name -> number object.

QuPath keeps one ``PathClass`` per name, and its colour is the class's, not the object's: every
tile of every slide is therefore classified ``Attention`` with the one colour
:data:`CLASS_COLOUR`, and each tile's heatmap colour goes into its own ``properties.color``,
which QuPath reads per object (``PathObject.setColor``).

One ``Feature`` per patch: a closed level-0 ``Polygon`` (QuPath places objects in level-0 pixel
coordinates, y down), ``objectType: "tile"`` (a detection, so QuPath's *Measure > Show
measurement maps* colours them), the heatmap's colour as the object colour, and the
``measurements`` ``Attention`` (the softmax weight), ``Attention percentile`` (0-100 within the
patient) and ``Attention x N`` (1 = uniform attention), plus the comparison model's where there
is one. The ids are UUIDs derived from the slide id and patch index, so a re-export replaces
the same objects.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps

from ..fileio import write_text
from .heatmap import CMAP

_NAMESPACE = uuid.UUID("9a1c3f4e-2b7d-4f0e-8c55-6d1e2a7b9c10")
CLASS_NAME = "Attention"
CLASS_COLOUR = (180, 60, 140)
"""The one colour of the ``Attention`` class in QuPath (the tiles' own colours are per object)."""


def patch_features(
    slide_id: str,
    coords: np.ndarray,
    patch_size_level0: int,
    measurements: Mapping[str, np.ndarray],
    colour_by: np.ndarray,
) -> list[dict[str, Any]]:
    """The features of one slide (``measurements``: name -> ``[N]`` values; ``colour_by`` in [0, 1],
    drawn with the heatmap's colour map)."""
    cmap = colormaps[CMAP]
    side = int(patch_size_level0)
    out = []
    for k, (x, y) in enumerate(np.asarray(coords, dtype=np.int64).tolist()):
        ring = [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]
        rgb = [round(255 * c) for c in cmap(float(colour_by[k]))[:3]]
        out.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid5(_NAMESPACE, f"{slide_id}/{k}")),
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "tile",
                    "name": f"patch {k}",
                    "color": rgb,
                    "classification": {"name": CLASS_NAME, "color": list(CLASS_COLOUR)},
                    "measurements": {name: float(values[k]) for name, values in measurements.items()},
                },
            }
        )
    return out


def write_geojson(
    path: Path,
    slide_id: str,
    coords: np.ndarray,
    patch_size_level0: int,
    measurements: Mapping[str, np.ndarray],
    colour_by: np.ndarray,
) -> Path:
    """Write the FeatureCollection of one slide (see the module docstring)."""
    collection = {
        "type": "FeatureCollection",
        "features": patch_features(slide_id, coords, patch_size_level0, measurements, colour_by),
    }
    write_text(path, json.dumps(collection, separators=(",", ":")) + "\n")
    return path
