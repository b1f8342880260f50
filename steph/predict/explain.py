"""``stephctl predict --explain``: the explain pages (heatmaps, patches, transfer) of predicted patients.

Each predicted patient's bag (every slide's patches, in slide order, as predicted) goes once
through each fold module of the model; :func:`steph.explain.stage.run_attention` records the
attention of its last ``encode`` call (ABMIL's softmax; STEPH's merged encoder) and
:func:`steph.explain.render_patient` draws it into ``<run>/patients/<patient_id>/``.

An ensemble (``export --all-folds``) shows the mean of its folds' attention,
``a_k = (1/F) sum_f a_k^(f)``: each fold's weights sum to one over the bag, so the mean does
too. Its STEPH transfer chart shows the folds' mean ``w`` and ``lambda`` per source, a source
marked selected when most folds selected it. Slide images come from the prediction inputs, else
from the project's ``slides/manifest.csv``; a slide without one is drawn on its coordinate grid
and left out of the montage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..errors import StephError
from ..explain import Transfer, render_patient
from ..explain.inputs import live_transfer, read_geometry, slide_inputs
from ..explain.stage import run_attention
from ..progress import NULL_PROGRESS, Progress
from ..records import PredictionRecord
from ..report import StageReport, Status

if TYPE_CHECKING:
    from ..evaluation.predictors import LoadedModel
    from ..layout import PredictionLayout
    from .run import PatientCase

log = logging.getLogger(__name__)


@dataclass
class ExplainedPatient:
    """What ``--explain`` wrote for one patient, or why it could not."""

    patient_id: str
    page: Path | None = None
    files: list[Path] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Images left out (a slide that cannot be read) or the reason no page was written."""
    hint: str | None = None
    transfer: Transfer | None = None
    """The STEPH coefficients drawn (None: not a STEPH model)."""


def patient_attention(
    model: LoadedModel, bag: Tensor, device: torch.device
) -> tuple[np.ndarray, list[dict[str, Tensor]]]:
    """Attention ``[K]`` of the model on one bag and, per fold, the forward pass's extras
    (STEPH: ``w``, ``lambda``, ``selected``).

    ``a_k = (1/F) sum_f a_k^(f)`` over the ``F`` fold modules, ``a^(f)`` being the softmax of
    fold ``f``'s last attention pooling on the bag (one fold: its own attention).
    """
    maps, extras = [], []
    for _, module in model.modules:
        attention, _ = run_attention(module, bag, device)
        maps.append(attention.astype(np.float64))
        extras.append(dict(getattr(module, "last_extras", {}) or {}))
    return np.mean(maps, axis=0), extras


def patient_transfer(model: LoadedModel, extras: Sequence[Mapping[str, Tensor]]) -> Transfer | None:
    """The patient's transfer coefficients from each fold's extras, or None (not STEPH).

    One fold: its ``w``, ``lambda`` and selection. ``F`` folds: ``w_s = (1/F) sum_f w_s^(f)``,
    ``lambda_s`` likewise, and source ``s`` is marked selected when ``#{f: selected_s^(f)} > F/2``.
    """
    per_fold = [
        live_transfer(dict(e), model.sources.get(fold, ()))
        for (fold, _), e in zip(model.modules, extras, strict=True)
    ]
    found = [t for t in per_fold if t is not None]
    if not found or len(found) != len(per_fold) or len({t.sources for t in found}) != 1:
        return None
    if len(found) == 1:
        return found[0]
    w = np.mean([t.w for t in found], axis=0)
    lam = np.mean([t.lam for t in found], axis=0)
    votes = np.sum([t.selected for t in found], axis=0)
    return Transfer(
        found[0].sources,
        tuple(float(v) for v in w),
        tuple(float(v) for v in lam),
        tuple(bool(2 * v > len(found)) for v in votes),
    )


def explain_cases(
    run: PredictionLayout,
    model: LoadedModel,
    cases: Sequence[PatientCase],
    bags: Mapping[str, Tensor],
    risks: Mapping[str, float],
    *,
    device: torch.device,
    top_n: int = 8,
    images: Mapping[str, Path] | None = None,
    progress: Progress = NULL_PROGRESS,
) -> list[ExplainedPatient]:
    """Write the page of every case under ``run.patient_dir(patient_id)``.

    Args:
        risks: patient id -> the prediction's risk (shown on the page).
        top_n: most and least attended patches shown (each) in the montage.
        images: slide id -> slide file for slides the cases give no file for (project slides).

    A patient whose feature files carry no coordinates gets no page (its reason and fix in
    :attr:`ExplainedPatient.problems` / ``hint``); a slide that cannot be read loses only the
    images that need it.
    """
    out = []
    folds = [fold for fold, _ in model.modules]
    how = f"fold {folds[0]}" if len(folds) == 1 else f"mean of the {len(folds)} folds' attention"
    progress.start("explain", len(cases), unit="patients")
    try:
        for case in cases:
            done = ExplainedPatient(case.patient_id)
            try:
                bag = bags[case.patient_id]
                slides = [
                    read_geometry(path, sid, patches=_rows(path, sid))
                    for sid, path in zip(case.slide_ids, case.feature_files, strict=True)
                ]
                attention, extras = patient_attention(model, bag, device)
                known = dict(images or {})
                known.update({sid: p for sid, p in zip(case.slide_ids, case.slide_files, strict=True) if p})
                transfer = patient_transfer(model, extras)
                page = render_patient(
                    run.patient_dir(case.patient_id),
                    case.patient_id,
                    slide_inputs(slides, attention, None, known),
                    model=model.name,
                    transfer=transfer,
                    risk=risks.get(case.patient_id),
                    top_n=top_n,
                    facts=[("model", f"{model.name} ({how})"), ("slides", ", ".join(case.slide_ids))],
                )
            except StephError as exc:
                log.warning("patient %s: no explanation page: %s", case.patient_id, exc)
                done.problems.append(exc.message)
                done.hint = exc.hint
            else:
                done.page, done.files = page.html, list(page.files)
                done.notices, done.problems = list(page.notices), list(page.problems)
                done.transfer = transfer
            out.append(done)
            progress.advance("explain", 1, item=case.patient_id)
    finally:
        progress.finish("explain")
    return out


def explain_record(explained: Iterable[ExplainedPatient], patches: int) -> dict[str, object]:
    """What a run's ``meta.json`` keeps of ``--explain``: the settings and the complete pages."""
    pages = {e.patient_id: str(e.page) for e in explained if e.page and not e.problems}
    return {"patches": int(patches), "pages": pages}


def finished_pages(done: PredictionRecord, patches: int) -> list[str] | None:
    """The pages of a finished run when they are all there, made with ``patches`` (None: redo).

    A run without pages, with another ``patches``, with an incomplete page (a slide that could not
    be read) or whose pages are gone is redone.
    """
    record = done.explain
    if not isinstance(record, dict) or record.get("patches") != int(patches):
        return None
    pages = [str(p) for p in dict(record.get("pages") or {}).values()]
    if len(pages) != int(done.patients or 0):
        return None
    return pages if all(Path(p).is_file() for p in pages) else None


def add_pages(report: StageReport, explained: Iterable[ExplainedPatient]) -> None:
    """One report item ``<patient_id>/explain`` per patient: its files, notices and transfer.

    A page with problems is FAILED (the prediction stands; exit 2 says something is to fix).
    """
    for page in explained:
        key = f"{page.patient_id}/explain"
        details: dict[str, object] = {"files": [str(f) for f in page.files], "notices": page.notices}
        if page.transfer is not None:
            t = page.transfer
            details["transfer"] = {
                "sources": list(t.sources),
                "w": list(t.w),
                "lambda": list(t.lam),
                "selected": list(t.selected),
            }
        if page.problems:
            what = f"{page.patient_id}: explain page " + ("incomplete" if page.page else "not written")
            report.add(key, Status.FAILED, f"{what}: {'; '.join(page.problems)}", hint=page.hint, **details)
        else:
            report.add(key, Status.DONE, str(page.page), **details)


def _rows(path: Path, slide_id: str) -> int:
    """Feature rows of one slide's file (the bag holds them in this order), read cheaply."""
    from ..data.stores import store_for

    store = store_for(path)
    return store.shape(store.ref(path, slide_id))[0]
