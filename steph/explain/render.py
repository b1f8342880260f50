"""The project-independent renderer: one patient's attention, patches and transfer, on disk.

:func:`render_patient` needs nothing but arrays and (optionally) slide files, so both
``stephctl explain`` (inside a project) and prediction on new slides (a model bundle, no
project) call it. It never raises for a missing or unreadable slide: the images that need the
slide are skipped and the reason is returned in :attr:`PatientPage.problems`; slides without a
path (features only) are drawn on their coordinate grid and noted in :attr:`PatientPage.notices`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SlideError
from ..slides.reader import Slide
from .geojson import write_geojson
from .heatmap import (
    ColourScale,
    Panel,
    Scale,
    draw_heatmap,
    grid_extent,
    percentile_rank,
    thumbnail_downsample,
)
from .page import PageContent, write_page
from .patches import Tile, draw_montage, read_patch
from .transfer import Transfer, TransferFigure, draw_transfer

log = logging.getLogger(__name__)

PAGE = "index.html"
MONTAGE = "patches.png"
TRANSFER = "transfer.png"
DEFAULT_PATCH_PX = 224
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class SlideInput:
    """One slide of the patient: where its patches are and how much attention each got.

    ``attention`` holds the model's softmax weights of these patches (they sum to one over ALL
    the patient's slides); ``compare`` the same for a second model, or None.
    """

    slide_id: str
    coords: np.ndarray
    """``[N, 2]`` int level-0 ``x, y`` of each patch's top-left corner."""
    patch_size_level0: int
    """Patch edge in level-0 pixels."""
    attention: np.ndarray
    """``[N]`` attention of each patch (rows as ``coords``)."""
    compare: np.ndarray | None = None
    slide_path: Path | None = None
    """The whole-slide image, or None for features only (no thumbnail, no montage)."""
    patch_size: int | None = None
    """Patch edge in pixels at the extraction resolution (montage tiles; default 224)."""

    def __post_init__(self) -> None:
        n = len(self.coords)
        if np.shape(self.coords) != (n, 2) or len(self.attention) != n or n == 0:
            raise ValueError(
                f"slide {self.slide_id}: coords must be [N, 2] with N >= 1 and one attention per row"
            )
        if self.compare is not None and len(self.compare) != n:
            raise ValueError(
                f"slide {self.slide_id}: the comparison attention has {len(self.compare)} rows, not {n}"
            )


@dataclass
class PatientPage:
    """What :func:`render_patient` wrote, and what it had to leave out."""

    patient_id: str
    folder: Path
    html: Path
    files: list[Path] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    transfer: TransferFigure | None = None
    """The transfer chart and the bar lengths read back from it (None without ``transfer``)."""


def file_stem(slide_id: str) -> str:
    """A file-name-safe form of a slide id (other characters become ``_``)."""
    return _UNSAFE.sub("_", slide_id) or "slide"


def render_patient(
    folder: Path,
    patient_id: str,
    slides: Sequence[SlideInput],
    *,
    model: str = "model",
    compare_model: str | None = None,
    transfer: Transfer | None = None,
    risk: float | None = None,
    top_n: int = 8,
    facts: Sequence[tuple[str, str]] = (),
    links: Sequence[tuple[str, str]] = (),
    scale: Scale = "absolute",
) -> PatientPage:
    """Write one patient's explanation into ``folder`` and return the paths written.

    Files (``<slide>`` = :func:`file_stem` of the slide id):

    - ``heatmap-<slide>.png``: attention percentile over the slide thumbnail (coordinate grid
      when the slide is absent), the ``compare`` map beside it when given;
    - ``patches.png``: the ``top_n`` most and least attended patches read from the slides;
    - ``transfer.png``: w and lambda per source, selected marked (when ``transfer`` is given);
    - ``<slide>.geojson``: QuPath FeatureCollection, one level-0 tile per patch;
    - ``index.html``: the page that shows all of them.

    Args:
        folder: output folder (created).
        patient_id: shown on the page.
        slides: the patient's slides (their attentions together are the patient's softmax).
        model, compare_model: names shown for the main and the comparison maps.
        transfer: STEPH coefficients of this patient, or None.
        risk: the model's risk for this patient, or None.
        top_n: patches per montage row.
        facts: extra ``(label, value)`` rows for the page's header table.
        links: ``(text, href)`` links shown under it (href relative to the page).
        scale: heatmap colours, ``absolute`` attention or ``percentile`` within the patient
            (:class:`~steph.explain.heatmap.ColourScale`); the GeoJSON tiles use the same colours.
    """
    folder.mkdir(parents=True, exist_ok=True)
    page = PatientPage(patient_id, folder, folder / PAGE)
    all_attention = np.concatenate([np.asarray(s.attention, dtype=np.float64) for s in slides])
    q_all = percentile_rank(all_attention)
    n_all = len(all_attention)
    has_compare = all(s.compare is not None for s in slides) and compare_model is not None
    q_cmp = (
        percentile_rank(np.concatenate([np.asarray(s.compare, dtype=np.float64) for s in slides]))
        if has_compare
        else None
    )
    colours = ColourScale.for_patient(
        scale,
        [all_attention]
        + (
            [np.concatenate([np.asarray(s.compare, dtype=np.float64) for s in slides])] if has_compare else []
        ),
    )
    heatmaps: list[tuple[str, Path]] = []
    geojsons: list[tuple[str, Path]] = []
    candidates: list[tuple[SlideInput, Slide, slice]] = []
    start = 0
    for s in slides:
        part = slice(start, start + len(s.attention))
        start = part.stop
        handle, thumb, size = _open(s, page)
        panels = [Panel(model, q_all[part], np.asarray(s.attention))]
        if q_cmp is not None:
            panels.append(Panel(str(compare_model), q_cmp[part], np.asarray(s.compare)))
        note = "" if thumb is not None else "no slide image: drawn on the feature file's coordinate grid"
        png = draw_heatmap(
            folder / f"heatmap-{file_stem(s.slide_id)}.png",
            title=f"{patient_id} / {s.slide_id}: {len(s.attention)} patches",
            background=thumb,
            coords=np.asarray(s.coords),
            patch_size_level0=s.patch_size_level0,
            size_level0=size,
            panels=panels,
            scale=colours,
            note=note,
        )
        heatmaps.append((s.slide_id, png))
        measurements = {
            "Attention": np.asarray(s.attention, dtype=np.float64),
            "Attention percentile": 100.0 * q_all[part],
            "Attention x N": np.asarray(s.attention, dtype=np.float64) * n_all,
        }
        if q_cmp is not None:
            measurements[f"Attention ({compare_model})"] = np.asarray(s.compare, dtype=np.float64)
            measurements[f"Attention percentile ({compare_model})"] = 100.0 * q_cmp[part]
        gj = write_geojson(
            folder / f"{file_stem(s.slide_id)}.geojson",
            s.slide_id,
            np.asarray(s.coords),
            s.patch_size_level0,
            measurements,
            colours.colour(np.asarray(s.attention), q_all[part]),
        )
        geojsons.append((s.slide_id, gj))
        if handle is not None:
            candidates.append((s, handle, part))
    montage = _montage(page, slides, candidates, all_attention, q_all, top_n, model)
    for _, handle, _ in candidates:
        handle.close()
    transfer_png = None
    if transfer is not None:
        page.transfer = draw_transfer(folder / TRANSFER, transfer, title=f"{patient_id}: {model}")
        transfer_png = page.transfer.path
    page.files += (
        [p for _, p in heatmaps] + ([montage] if montage else []) + ([transfer_png] if transfer_png else [])
    )
    page.files += [p for _, p in geojsons]
    content = PageContent(
        patient_id=patient_id,
        model=model,
        compare_model=compare_model if has_compare else None,
        risk=risk,
        facts=facts,
        heatmaps=heatmaps,
        geojson=geojsons,
        montage=montage,
        transfer=transfer,
        transfer_png=transfer_png,
        notices=page.notices,
        problems=page.problems,
        links=links,
        scale=scale,
    )
    write_page(page.html, content)
    page.files.append(page.html)
    return page


def _short(slide_id: str, patient_id: str) -> str:
    """``SYN-1-DX2`` of patient ``SYN-1`` -> ``DX2`` (slide ids usually start with the patient's)."""
    rest = slide_id.removeprefix(patient_id).lstrip("-_.")
    return rest or slide_id


def _open(s: SlideInput, page: PatientPage) -> tuple[Slide | None, np.ndarray | None, tuple[int, int]]:
    """``(Slide or None, thumbnail or None, level-0 size)``; records why a slide is not used."""
    from ..slides.reader import read_thumbnail

    grid = grid_extent(np.asarray(s.coords), s.patch_size_level0)
    if s.slide_path is None:
        page.notices.append(
            f"{s.slide_id}: no slide image (features only): heatmap on the coordinate grid, no patches"
        )
        return None, None, grid
    try:
        slide = Slide(s.slide_path, slide_id=s.slide_id)
        thumb = read_thumbnail(slide, thumbnail_downsample(slide.dimensions))
    except SlideError as exc:
        page.problems.append(
            f"{exc.message}: heatmap drawn on the coordinate grid and the slide's patches left out of the "
            "montage (restore the file or fix its path, then rerun)"
        )
        return None, None, grid
    return slide, thumb, slide.dimensions


def _montage(
    page: PatientPage,
    slides: Sequence[SlideInput],
    candidates: Sequence[tuple[SlideInput, Slide, slice]],
    attention: np.ndarray,
    q: np.ndarray,
    top_n: int,
    model: str,
) -> Path | None:
    """The montage over the patches of the slides that opened (None when none did)."""
    if not candidates:
        page.notices.append("patch montage skipped: no slide image to read patches from")
        return None
    index = np.concatenate([np.arange(part.start, part.stop) for _, _, part in candidates])
    owner: dict[int, tuple[SlideInput, Slide, int]] = {}
    for s, handle, part in candidates:
        for k in range(part.start, part.stop):
            owner[k] = (s, handle, k - part.start)
    order = index[np.argsort(-attention[index], kind="stable")]
    n = min(top_n, len(order))
    rows = []
    for chosen in (order[:n], order[::-1][:n]):
        tiles = []
        for k in chosen:
            s, handle, local = owner[int(k)]
            x, y = (int(v) for v in np.asarray(s.coords)[local])
            try:
                image = read_patch(handle, x, y, s.patch_size_level0, s.patch_size or DEFAULT_PATCH_PX)
            except SlideError as exc:
                page.problems.append(f"{exc.message} (patch left out of the montage)")
                continue
            label = _short(s.slide_id, page.patient_id) if len(slides) > 1 else ""
            tiles.append(Tile(image, label, x, y, float(attention[k]), float(q[k])))
        rows.append(tiles)
    note = "" if len(candidates) == len(slides) else "patches of slides without an image are not shown"
    return draw_montage(
        page.folder / MONTAGE,
        title=f"{page.patient_id}: {model}, {n} most and {n} least attended of {len(attention)} patches",
        top=rows[0],
        bottom=rows[1],
        note=note,
    )
