"""What ``stephctl explain`` reads from a project: patch coords, slide paths, risks, coefficients."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor

from ..data.features import read_features
from ..data.stores import H5Store, checked_h5_dataset
from ..errors import DataError, MissingArtifactError
from ..evaluation.inputs import read_coefficients
from ..layout import CANCER_SPECIFIC, ProjectLayout
from .render import SlideInput
from .transfer import Transfer

NO_COORDS_HINT = (
    "re-extract the slide with `stephctl extract --overwrite` (or TRIDENT), whose .h5 files carry "
    "`coords`; .pt/.npy features have no patch positions"
)


@dataclass(frozen=True)
class SlideGeometry:
    """Where each patch of one slide lies: level-0 ``coords`` ``[N, 2]`` and the patch edge."""

    slide_id: str
    coords: np.ndarray
    patch_size_level0: int
    """Patch edge in level-0 pixels."""
    patch_size: int | None
    """Patch edge at the extraction resolution (None when the file does not say)."""


@dataclass(frozen=True)
class SlidePatches(SlideGeometry):
    """One slide's features with where each patch lies on the slide."""

    features: Tensor


def _attr(handle: h5py.File, name: str) -> float | None:
    for owner in (handle.attrs, handle["coords"].attrs):
        if name in owner:
            value = owner[name]
            value = value.item() if hasattr(value, "item") else value
            if isinstance(value, int | float) and value > 0:
                return float(value)
    return None


def _grid_step(coords: np.ndarray) -> int | None:
    steps = [np.diff(np.unique(coords[:, axis])) for axis in (0, 1)]
    positive = np.concatenate(steps)
    return int(positive.min()) if positive.size else None


def read_slide_patches(path: Path, slide_id: str) -> SlidePatches:
    """Features ``[N, D]`` and level-0 coords ``[N, 2]`` of one slide, and its patch size
    (see :func:`read_geometry`).

    Raises:
        DataError: the file has no ``coords`` (or they do not fit the features).
    """
    features = read_features(path)
    geometry = read_geometry(path, slide_id, patches=features.shape[0])
    return SlidePatches(**{f: getattr(geometry, f) for f in _GEOMETRY_FIELDS}, features=features)


def read_geometry(path: Path, slide_id: str, *, patches: int) -> SlideGeometry:
    """Level-0 coords ``[N, 2]`` of one slide's ``patches`` feature rows, and its patch size.

    The level-0 patch edge is the file's ``patch_size_level0`` (ours and TRIDENT's, on the file
    or on ``coords``), else ``patch_size * target_mpp / slide_mpp``, else ``patch_size``, else the
    smallest step between distinct coordinates.

    Raises:
        DataError: the file has no ``coords``, or not one row per feature row.
    """
    if path.suffix.lower() not in H5Store.suffixes:
        raise DataError(f"slide {slide_id}: {path} has no patch coordinates", hint=NO_COORDS_HINT)
    with h5py.File(path, "r") as handle:
        dataset = checked_h5_dataset(handle, "coords", path)
        if dataset is None:
            raise DataError(f"slide {slide_id}: {path} has no dataset 'coords'", hint=NO_COORDS_HINT)
        if math.prod(dataset.shape or ()) != 2 * patches:  # before reading: a header may lie
            raise DataError(
                f"slide {slide_id}: {path} has {math.prod(dataset.shape or ()) // 2} coords for {patches} patches",
                hint=NO_COORDS_HINT,
            )
        coords = np.asarray(dataset[()]).reshape(-1, 2).astype(np.int64)
        ps0 = _attr(handle, "patch_size_level0")
        size = _attr(handle, "patch_size")
        target, slide_mpp = _attr(handle, "target_mpp"), _attr(handle, "slide_mpp")
    if len(coords) != patches:
        raise DataError(
            f"slide {slide_id}: {path} has {len(coords)} coords for {patches} patches",
            hint=NO_COORDS_HINT,
        )
    if ps0 is None and size is not None and target is not None and slide_mpp is not None:
        ps0 = size * target / slide_mpp
    ps0 = ps0 or size or _grid_step(coords) or 1.0
    return SlideGeometry(slide_id, coords, max(1, round(ps0)), round(size) if size else None)


_GEOMETRY_FIELDS = ("slide_id", "coords", "patch_size_level0", "patch_size")


def slide_inputs(
    slides: Sequence[SlideGeometry],
    attention: np.ndarray,
    compare: np.ndarray | None,
    images: Mapping[str, Path | None],
) -> list[SlideInput]:
    """Split a patient's attention ``[K]`` (bag order: the slides' patches one after the other)
    into the renderer's per-slide inputs; ``images`` maps slide id -> slide file (absent: grid).

    Raises:
        DataError: the attention does not have one weight per patch of the slides.
    """
    out, start = [], 0
    total = sum(len(s.coords) for s in slides)
    if total != len(attention) or (compare is not None and len(compare) != total):
        raise DataError(f"the model returned {len(attention)} attention weights for {total} patches")
    for s in slides:
        part = slice(start, start + len(s.coords))
        start = part.stop
        out.append(
            SlideInput(
                s.slide_id,
                s.coords,
                s.patch_size_level0,
                attention[part],
                compare=None if compare is None else compare[part],
                slide_path=images.get(s.slide_id),
                patch_size=s.patch_size,
            )
        )
    return out


def slide_files(layout: ProjectLayout) -> dict[str, Path]:
    """Slide id -> image path from ``slides/manifest.csv`` (empty for a features-only project)."""
    if not layout.manifest.is_file():
        return {}
    from ..slides.manifest import read_manifest

    return {entry.slide_id: entry.path for entry in read_manifest(layout)}


def trained_model_file(layout: ProjectLayout, target: str, method: str, fold: int) -> Path:
    """The file whose presence says (target, method, fold) was trained.

    Raises:
        MissingArtifactError: it was not, naming what was trained instead.
    """
    if method == CANCER_SPECIFIC:
        path = layout.model_weights(target, fold)
        hint = f"train it: `stephctl train-source -c {target} -k {fold}`"
    else:
        path = layout.merged_meta(target, method, fold)
        hint = f"train it with `stephctl merge --target {target} --fold {fold}`"
    if path.is_file():
        return path
    trained = [f"{m} folds {layout.result_folds(target, m)}" for m in layout.result_methods(target)]
    raise MissingArtifactError(
        f"{target}: method {method!r} has no trained fold {fold} ({path} is missing)",
        hint=hint + (f", or pick one with results: {'; '.join(trained)}" if trained else ""),
    )


def test_risks(layout: ProjectLayout, target: str, method: str, fold: int) -> dict[str, float]:
    """Patient id -> risk from the fold's ``predictions.csv`` (its test patients).

    Raises:
        MissingArtifactError: no predictions for this fold.
        DataError: a risk that is not a number.
    """
    path = layout.predictions(target, method, fold)
    if not path.is_file():
        raise MissingArtifactError(
            f"no test predictions at {path}", hint="rerun the merge (or train-source) of this fold"
        )
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    risks = {}
    for i, row in enumerate(rows, start=2):
        try:
            risks[row["patient_id"]] = float(row["risk"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path} row {i}: no numeric risk", hint="rerun the fold") from None
        if math.isnan(risks[row["patient_id"]]):
            raise DataError(f"{path} row {i}: risk is NaN", hint="rerun the fold")
    return risks


def extremes(risks: dict[str, float], n: int) -> list[str]:
    """The ``n`` highest-risk then the ``n`` lowest-risk patients (each once, ties by id).

    >>> extremes({"a": 0.1, "b": 0.9, "c": 0.5, "d": -1.0}, 1)
    ['b', 'd']
    """
    ranked = sorted(risks, key=lambda pid: (-risks[pid], pid))
    chosen = ranked[:n] + ranked[::-1][:n]
    return list(dict.fromkeys(chosen))


def transferring_patients(layout: ProjectLayout, target: str, method: str, fold: int) -> set[str] | None:
    """Test patients of the run whose ``coefficients.csv`` gives some source a weight ``w > 0``
    (None when the run has no coefficients, e.g. ``cancer-specific``). The others have no
    transfer to show (:attr:`Transfer.none`)."""
    path = layout.merged_coefficients(target, method, fold)
    if method == CANCER_SPECIFIC or not path.is_file():
        return None
    return {r["patient_id"] for r in read_coefficients(path) if float(r["w"]) > 0}


def stored_transfer(
    layout: ProjectLayout, target: str, method: str, fold: int, patient_id: str
) -> Transfer | None:
    """The patient's rows of the run's ``coefficients.csv`` (None: no file or not a test patient)."""
    path = layout.merged_coefficients(target, method, fold)
    if method == CANCER_SPECIFIC or not path.is_file():
        return None
    rows = [r for r in read_coefficients(path) if r["patient_id"] == patient_id]
    if not rows:
        return None
    return Transfer(
        tuple(r["source"] for r in rows),
        tuple(float(r["w"]) for r in rows),
        tuple(float(r["lambda"]) for r in rows),
        tuple(float(r["selected"]) > 0 for r in rows),
    )


def live_transfer(extras: dict[str, Tensor], sources: Sequence[str]) -> Transfer | None:
    """Transfer from a forward pass's extras (``w``, ``lambda``, ``selected`` of one bag)."""
    if not {"w", "lambda", "selected"} <= set(extras) or not sources:
        return None
    w, lam, sel = (extras[k][0].detach().to("cpu", torch.float64) for k in ("w", "lambda", "selected"))
    return Transfer(tuple(sources), tuple(w.tolist()), tuple(lam.tolist()), tuple(bool(v) for v in sel))
