"""The patch-feature HDF5 format, written incrementally and atomically.

One file per slide, ``features/<encoder>/<slide_id>.h5``:

- ``features`` ``[N, D]`` float32, ``coords`` ``[N, 2]`` int64 (level-0 ``x, y`` of each
  patch's top-left corner), rows in the same order, both chunked with an unlimited first axis;
- file attributes: ``format``, ``slide_id``, ``encoder``, ``encoder_weights``, ``embed_dim``,
  ``precision``, ``patch_size`` (px at the target), ``target_mpp``, ``slide_mpp``,
  ``mpp_source``, ``patch_size_level0``, ``slide_width``, ``slide_height``, ``read_level``,
  ``read_downsample``, ``min_tissue_fraction``, ``stephctl_version``, and, written last,
  ``n_patches`` and ``complete = 1``;
- TRIDENT's names on ``coords`` (``patch_size``, ``patch_size_level0``,
  ``level0_magnification``, ``target_magnification``, ``level0_width``, ``level0_height``,
  ``overlap``, ``name``) and ``name``/``encoder`` on ``features``, so TRIDENT-style readers work
  (magnification = 10 / mpp, the convention that 0.25 um/px is 40x).

Rows are appended as the encoder produces them, into a temporary file in the same folder that
is renamed into place only after ``complete`` is set and the file is closed: a killed run
leaves a ``.tmp-*`` file that no reader or rerun takes for done.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DataError
from ..fileio import TMP_PREFIX, atomic_path

log = logging.getLogger(__name__)

FORMAT = "stephctl-features/1"
CHUNK_ROWS = 256


class FeatureWriter:
    """Appends ``(features, coords)`` rows to an open HDF5 file (see module docstring)."""

    def __init__(self, handle: h5py.File, embed_dim: int) -> None:
        self._h5 = handle
        self.embed_dim = embed_dim
        self.features = handle.create_dataset(
            "features",
            shape=(0, embed_dim),
            maxshape=(None, embed_dim),
            dtype="float32",
            chunks=(CHUNK_ROWS, embed_dim),
        )
        self.coords = handle.create_dataset(
            "coords", shape=(0, 2), maxshape=(None, 2), dtype="int64", chunks=(CHUNK_ROWS, 2)
        )
        self.rows = 0

    def append(self, features: np.ndarray, coords: np.ndarray) -> None:
        """Add ``features`` ``[B, D]`` and their ``coords`` ``[B, 2]``."""
        n = features.shape[0]
        if features.shape != (n, self.embed_dim) or coords.shape != (n, 2):
            raise ValueError(
                f"shape mismatch: features {features.shape}, coords {coords.shape}, D={self.embed_dim}"
            )
        if not np.isfinite(features).all():
            raise DataError(
                "the encoder produced NaN or infinite features",
                hint="with fp16 this can be an overflow: set extract.precision: fp32 (or bf16) in stephctl.yaml",
            )
        end = self.rows + n
        self.features.resize(end, axis=0)
        self.coords.resize(end, axis=0)
        self.features[self.rows : end] = features.astype(np.float32, copy=False)
        self.coords[self.rows : end] = coords.astype(np.int64, copy=False)
        self.rows = end


@contextlib.contextmanager
def write_features(
    final: Path,
    *,
    embed_dim: int,
    attrs: Mapping[str, Any],
    coords_attrs: Mapping[str, Any],
    features_attrs: Mapping[str, Any],
) -> Iterator[FeatureWriter]:
    """Open a temporary sibling of ``final`` for appending; rename it into place on success.

    On any exception (or kill) the temporary file is deleted (or left as ``.tmp-*``) and
    ``final`` is untouched.
    """
    with atomic_path(final) as tmp, h5py.File(tmp, "w") as handle:
        for key, value in attrs.items():
            handle.attrs[key] = value
        handle.attrs["format"] = FORMAT
        handle.attrs["complete"] = 0
        writer = FeatureWriter(handle, embed_dim)
        yield writer
        for key, value in coords_attrs.items():
            writer.coords.attrs[key] = value
        for key, value in features_attrs.items():
            writer.features.attrs[key] = value
        handle.attrs["n_patches"] = writer.rows
        handle.attrs["complete"] = 1


def is_complete(path: Path) -> bool:
    """True when ``path`` is a finished feature file: readable, ``complete = 1`` and row counts that agree."""
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as handle:
            if int(handle.attrs.get("complete", 0)) != 1:
                return False
            n = int(handle.attrs.get("n_patches", -1))
            complete: bool = handle["features"].shape[0] == n and handle["coords"].shape[0] == n
            return complete
    except (OSError, KeyError, ValueError, TypeError):
        return False


def read_attrs(path: Path) -> dict[str, Any]:
    """File attributes of a feature file (numpy scalars turned into Python values)."""
    with h5py.File(path, "r") as handle:
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in handle.attrs.items()}


def slide_identity(path: Path) -> dict[str, Any]:
    """What identifies the slide file a feature file was made from: ``slide_path`` (resolved),
    ``slide_bytes`` and ``slide_mtime_ns`` (empty when the file cannot be read)."""
    try:
        stat = Path(path).stat()
        resolved = str(Path(path).resolve())
    except (OSError, RuntimeError):
        return {}
    return {"slide_path": resolved, "slide_bytes": int(stat.st_size), "slide_mtime_ns": int(stat.st_mtime_ns)}


def made_from(attrs: Mapping[str, Any], path: Path) -> bool:
    """Whether a feature file's ``attrs`` record the slide file ``path`` as it is now (same
    resolved path, size and modification time); files of older versions record no size: False."""
    now = slide_identity(path)
    if not now or "slide_bytes" not in attrs or "slide_mtime_ns" not in attrs:
        return False
    recorded = str(attrs.get("slide_path", ""))
    try:
        same_path = Path(recorded).resolve() == Path(now["slide_path"])
    except (OSError, RuntimeError):
        return False
    return same_path and all(int(attrs[k]) == now[k] for k in ("slide_bytes", "slide_mtime_ns"))


def read_coords(path: Path) -> np.ndarray | None:
    """Level-0 ``[N, 2]`` patch coordinates of an HDF5 feature file (None: not HDF5 or no ``coords``).

    Raises:
        DataError: ``coords`` comes from another file or declares more than the file holds.
    """
    from ..data.stores import checked_h5_dataset

    if path.suffix not in (".h5", ".hdf5"):
        return None
    with h5py.File(path, "r") as handle:
        coords = checked_h5_dataset(handle, "coords", path)
        return None if coords is None else np.asarray(coords[()]).reshape(-1, 2)


def remove_stale_temps(final: Path) -> int:
    """Delete temporary files left for ``final`` by killed writers; call only while holding its lock."""
    pattern = re.compile(
        rf"^{re.escape(TMP_PREFIX)}\d+(@[A-Za-z0-9._-]+?)?-[0-9a-f]{{8}}-{re.escape(final.name)}$"
    )
    removed = 0
    if final.parent.is_dir():
        for leftover in final.parent.iterdir():
            if pattern.match(leftover.name):
                log.info("removing %s left by a killed run", leftover)
                leftover.unlink(missing_ok=True)
                removed += 1
    return removed
