"""What ``stephctl view`` shows, read from a project (and nothing written to it).

For one target: the test patients of every fold of every method with results (risk from the
fold's ``predictions.csv``, group high / low against the fold's training median risk from its
``metrics.json``, as in evaluate's Kaplan-Meier split); per patient, the slides (level-0 size
and patch grid from the feature files), the attention of any method's model of the patient's
fold (computed when first asked for, like ``stephctl explain``, and kept in memory), STEPH's
transfer coefficients (the run's ``coefficients.csv``), deep-zoom tiles of the slide
(``openslide.deepzoom``) and an attention overlay image aligned with the slide.

The overlay of a slide of level-0 size ``W x H`` is an RGBA PNG of ``round(W / d) x round(H / d)``
pixels with ``d = patch_size_level0 / OVERLAY_PX_PER_PATCH``; pixel ``(i, j)`` takes the colour of
the patch containing its centre ``((j + 1/2) d, (i + 1/2) d)`` and is transparent outside every
patch (:func:`steph.explain.heatmap.attention_raster`). Stretched over the slide's full extent it
lies on the patch grid to within half an overlay pixel (``d / 2`` level-0 pixels).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MissingArtifactError, StephError
from ..evaluation.inputs import train_median_risk
from ..explain.heatmap import CMAP, attention_raster, grid_extent, raster_shape
from ..explain.inputs import (
    SlidePatches,
    read_slide_patches,
    slide_files,
    stored_transfer,
    test_risks,
    trained_model_file,
)
from ..layout import CANCER_SPECIFIC, ProjectLayout, normalize_cancer

if TYPE_CHECKING:
    from ..config import ProjectConfig

log = logging.getLogger(__name__)

OVERLAY_PX_PER_PATCH = 4
"""Overlay pixels along one patch edge (a patch is drawn as a 4 x 4 block)."""
TILE_SIZE = 254
TILE_OVERLAP = 1
TOP_PATCHES = 6


@dataclass(frozen=True)
class PatientRow:
    """One test patient of one method's fold, as listed by the viewer."""

    patient_id: str
    fold: int
    risk: float
    group: str
    """``high`` or ``low`` (risk above / at or below the fold's training median), ``n/a`` without one."""


def risk_group(risk: float, cut: float | None) -> str:
    """``high`` when ``risk > cut`` (evaluate's split), ``low`` otherwise, ``n/a`` without a cut-off."""
    if cut is None:
        return "n/a"
    return "high" if risk > cut else "low"


class ProjectView:
    """Read-only access to one target of a project, for the viewer's HTTP handlers.

    Thread-safe: handlers run in threads; models and attention are computed once under a lock.
    """

    def __init__(self, layout: ProjectLayout, config: ProjectConfig, target: str) -> None:
        self.layout = layout
        self.config = config
        self.target = normalize_cancer(target)
        self.methods = [m for m in layout.result_methods(self.target) if layout.result_folds(self.target, m)]
        if not self.methods:
            raise MissingArtifactError(
                f"{self.target}: no test predictions under {layout.results_root / self.target}",
                hint=f"train and evaluate first, e.g. `stephctl train-source -c {self.target}` "
                "(or run `stephctl demo`)",
            )
        self._lock = threading.RLock()
        self._models: dict[tuple[str, int], Any] = {}
        self._attention: dict[tuple[str, int, str], np.ndarray] = {}
        self._slides: dict[str, SlidePatches] = {}
        self._deepzoom: dict[str, Any] = {}

    # -- listing --------------------------------------------------------------------------------
    def patients(self, method: str) -> list[PatientRow]:
        """Every test patient of every fold of ``method``, highest risk first."""
        self._check_method(method)
        rows = []
        for fold in self.layout.result_folds(self.target, method):
            cut = train_median_risk(self.layout.result_metrics(self.target, method, fold))
            for pid, risk in test_risks(self.layout, self.target, method, fold).items():
                rows.append(PatientRow(pid, fold, risk, risk_group(risk, cut)))
        return sorted(rows, key=lambda r: (-r.risk, r.patient_id))

    @cached_property
    def cohort(self) -> Any:
        from ..data import load_cohort

        return load_cohort(self.layout, self.config, self.target)

    @cached_property
    def slide_paths(self) -> dict[str, Path]:
        return slide_files(self.layout)

    def patient(self, method: str, patient_id: str) -> dict[str, Any]:
        """Everything the patient panel shows: the fold, each method's risk and group on that
        fold, the slides with their geometry, and STEPH's transfer (None for other methods)."""
        row = next((r for r in self.patients(method) if r.patient_id == patient_id), None)
        if row is None:
            raise MissingArtifactError(
                f"{patient_id} is not a test patient of {self.target} {method}",
                hint="pick a patient from the list",
            )
        comparison = []
        for m in self.methods:
            if row.fold not in self.layout.result_folds(self.target, m):
                continue
            risks = test_risks(self.layout, self.target, m, row.fold)
            if patient_id not in risks:
                continue
            cut = train_median_risk(self.layout.result_metrics(self.target, m, row.fold))
            rank = 1 + sum(r > risks[patient_id] for r in risks.values())
            comparison.append(
                {
                    "method": m,
                    "risk": risks[patient_id],
                    "group": risk_group(risks[patient_id], cut),
                    "rank": rank,
                    "of": len(risks),
                    "attention": self._has_model(m, row.fold),
                }
            )
        slides = []
        for sid in self.cohort.patients[patient_id].slide_ids:
            patches = self._slide(sid)
            path = self.slide_paths.get(sid)
            size = self.slide_size(sid) if path is not None else None
            slides.append(
                {
                    "slide_id": sid,
                    "image": path is not None and path.is_file(),
                    "width": (size or grid_extent(patches.coords, patches.patch_size_level0))[0],
                    "height": (size or grid_extent(patches.coords, patches.patch_size_level0))[1],
                    "patch_size_level0": patches.patch_size_level0,
                    "patches": len(patches.coords),
                }
            )
        transfer = None
        if method != CANCER_SPECIFIC:
            t = stored_transfer(self.layout, self.target, method, row.fold, patient_id)
            if t is not None:
                transfer = {
                    "sources": list(t.sources),
                    "w": list(t.w),
                    "lambda": list(t.lam),
                    "selected": list(t.selected),
                    "none": t.none,
                }
        return {
            "patient_id": patient_id,
            "fold": row.fold,
            "risk": row.risk,
            "group": row.group,
            "method": method,
            "comparison": comparison,
            "slides": slides,
            "transfer": transfer,
        }

    # -- attention ------------------------------------------------------------------------------
    def attention(self, method: str, fold: int, patient_id: str) -> list[np.ndarray]:
        """The patient's attention under (method, fold), split per slide (cohort order)."""
        self._check_method(method)
        key = (method, fold, patient_id)
        with self._lock:
            if key not in self._attention:
                self._attention[key] = self._run(method, fold, patient_id)
            weights = self._attention[key]
        out, start = [], 0
        for sid in self.cohort.patients[patient_id].slide_ids:
            n = len(self._slide(sid).coords)
            out.append(weights[start : start + n])
            start += n
        return out

    def top_patches(
        self, method: str, fold: int, patient_id: str, n: int = TOP_PATCHES
    ) -> list[dict[str, Any]]:
        """The ``n`` most attended patches of the patient: slide, level-0 ``x, y`` and attention."""
        rows = []
        for sid, weights in zip(
            self.cohort.patients[patient_id].slide_ids, self.attention(method, fold, patient_id), strict=True
        ):
            coords = self._slide(sid).coords
            rows += [(float(w), sid, int(coords[k, 0]), int(coords[k, 1])) for k, w in enumerate(weights)]
        rows.sort(key=lambda r: -r[0])
        return [{"slide_id": s, "x": x, "y": y, "attention": a} for a, s, x, y in rows[:n]]

    def overlay_png(self, method: str, fold: int, patient_id: str, slide_id: str) -> bytes:
        """The RGBA overlay of one slide (see the module docstring), colours on the absolute scale
        ``alpha / alpha_max`` over the patient's patches (viridis)."""
        from matplotlib import colormaps
        from PIL import Image

        slides = self.cohort.patients[patient_id].slide_ids
        if slide_id not in slides:
            raise MissingArtifactError(
                f"{slide_id} is not a slide of {patient_id}", hint="pick one of " + ", ".join(slides)
            )
        weights = self.attention(method, fold, patient_id)
        high = max(float(w.max()) for w in weights) or 1.0
        patches = self._slide(slide_id)
        size = self.slide_size(slide_id) or grid_extent(patches.coords, patches.patch_size_level0)
        d = self.overlay_downsample(slide_id)
        values = weights[slides.index(slide_id)] / high
        raster = attention_raster(patches.coords, patches.patch_size_level0, values, size, d)
        rgba = colormaps[CMAP](np.nan_to_num(raster))
        rgba[..., 3] = np.where(np.isnan(raster), 0.0, 1.0)
        buffer = io.BytesIO()
        Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(buffer, format="PNG")
        return buffer.getvalue()

    def overlay_downsample(self, slide_id: str) -> float:
        """Level-0 pixels per overlay pixel (``patch_size_level0 / OVERLAY_PX_PER_PATCH``)."""
        return self._slide(slide_id).patch_size_level0 / OVERLAY_PX_PER_PATCH

    def overlay_shape(self, slide_id: str) -> tuple[int, int]:
        """``(height, width)`` of the overlay image of a slide."""
        patches = self._slide(slide_id)
        size = self.slide_size(slide_id) or grid_extent(patches.coords, patches.patch_size_level0)
        return raster_shape(size, self.overlay_downsample(slide_id))

    # -- slide images ---------------------------------------------------------------------------
    def slide_size(self, slide_id: str) -> tuple[int, int] | None:
        dz = self._zoom(slide_id)
        if dz is None:
            return None
        width, height = dz.level_dimensions[-1]
        return int(width), int(height)

    def dzi(self, slide_id: str) -> str:
        dz = self._zoom(slide_id)
        if dz is None:
            raise MissingArtifactError(f"{slide_id}: no slide image", hint="add it to slides/manifest.csv")
        dzi: str = dz.get_dzi("jpeg")
        return dzi

    def tile(self, slide_id: str, level: int, col: int, row: int) -> bytes:
        """One JPEG tile of the deep-zoom pyramid (``DeepZoomGenerator.get_tile``)."""
        dz = self._zoom(slide_id)
        if dz is None or not (0 <= level < dz.level_count):
            raise MissingArtifactError(f"{slide_id}: no deep-zoom level {level}", hint="reload the page")
        cols, rows = dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise MissingArtifactError(
                f"{slide_id}: no tile {col}_{row} at level {level}", hint="reload the page"
            )
        buffer = io.BytesIO()
        dz.get_tile(level, (col, row)).convert("RGB").save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()

    def patch_jpeg(self, slide_id: str, x: int, y: int, px: int = 160) -> bytes:
        """The patch at level-0 ``(x, y)`` of a slide, ``px`` pixels wide (JPEG)."""
        from PIL import Image

        from ..slides.reader import Slide

        path = self.slide_paths.get(slide_id)
        if path is None:
            raise MissingArtifactError(f"{slide_id}: no slide image", hint="add it to slides/manifest.csv")
        side = self._slide(slide_id).patch_size_level0
        with Slide(path, slide_id=slide_id) as slide:
            level = slide.best_level(side / px)
            factor = slide.level_downsamples[level]
            edge = max(1, round(side / factor))
            image = Image.fromarray(slide.read_rgb(x, y, level, (edge, edge))).resize((px, px))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=88)
        return buffer.getvalue()

    # -- internals ------------------------------------------------------------------------------
    def _check_method(self, method: str) -> None:
        if method not in self.methods:
            raise MissingArtifactError(
                f"{self.target}: no results of method {method!r}", hint="one of " + ", ".join(self.methods)
            )

    def _has_model(self, method: str, fold: int) -> bool:
        try:
            trained_model_file(self.layout, self.target, method, fold)
        except StephError:
            return False
        return True

    def _slide(self, slide_id: str) -> SlidePatches:
        with self._lock:
            if slide_id not in self._slides:
                path = self.layout.features(self.config.encoder, slide_id, cancer=self.target)
                self._slides[slide_id] = read_slide_patches(path, slide_id)
            return self._slides[slide_id]

    def _zoom(self, slide_id: str) -> Any:
        with self._lock:
            if slide_id not in self._deepzoom:
                path = self.slide_paths.get(slide_id)
                self._deepzoom[slide_id] = None
                if path is not None and path.is_file():
                    import openslide
                    from openslide.deepzoom import DeepZoomGenerator

                    handle = openslide.open_slide(str(path))
                    self._deepzoom[slide_id] = DeepZoomGenerator(
                        handle, tile_size=TILE_SIZE, overlap=TILE_OVERLAP, limit_bounds=False
                    )
            return self._deepzoom[slide_id]

    def _run(self, method: str, fold: int, patient_id: str) -> np.ndarray:
        import torch

        from ..evaluation.predictors import project_model
        from ..explain.stage import run_attention
        from ..runtime import resolve_device

        slides: Sequence[SlidePatches] = [self._slide(s) for s in self.cohort.patients[patient_id].slide_ids]
        bag = torch.cat([s.features for s in slides])
        device = resolve_device(self.config.train.device)
        if (method, fold) not in self._models:
            trained_model_file(self.layout, self.target, method, fold)
            loaded = project_model(self.layout, self.config, self.target, method, fold, device=device)
            self._models[(method, fold)] = loaded.modules[0][1]
        attention, _ = run_attention(self._models[(method, fold)], bag, device)
        return np.asarray(attention, dtype=np.float64)
