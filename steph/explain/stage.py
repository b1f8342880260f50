"""``stephctl explain``: per-patient attention pages of one trained model of a project.

For each chosen patient of ``target`` the model of ``(method, fold)`` runs once on the patient's
bag (every slide's patches, as in training), :func:`steph.models.abmil.capture_attention`
records the attention of its last ``encode`` call (ABMIL's own; STEPH's, task arithmetic's
and AdaMerging's merged encoder; ROUPKT's router), and :func:`render_patient` draws it into
``reports/<TARGET>/patients/<patient_id>/<method>_fold_<k>/``. A patient whose record
(``explain.json``: model files, options, feature files) is unchanged is skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from .. import __version__
from ..data.bags import checked_shape
from ..data.stores import store_for
from ..errors import ConfigError, ConsistencyError, DataError, StephError
from ..fileio import sha256_file
from ..layout import CANCER_SPECIFIC, ProjectLayout, normalize_cancer
from ..progress import NULL_PROGRESS, Progress
from ..records import ExplainRecord, MergeRecord
from ..report import StageReport, Status
from ..theta0 import theta0_dim_in
from .heatmap import Scale
from .inputs import (
    SlidePatches,
    extremes,
    live_transfer,
    read_slide_patches,
    slide_files,
    slide_inputs,
    stored_transfer,
    test_risks,
    trained_model_file,
)
from .page import write_index
from .render import render_patient

if TYPE_CHECKING:
    from ..config import ProjectConfig

log = logging.getLogger(__name__)

STAGE = "explain"


def run_attention(model: nn.Module, bag: Tensor, device: torch.device) -> tuple[np.ndarray, float]:
    """Attention ``[K]`` of the model's last encode call on one bag, and its risk ``-sum_j S_j``."""
    from ..models.abmil import capture_attention
    from ..survival import risk_score
    from ..training.loop import ModelOutput

    with torch.inference_mode(), capture_attention() as maps:
        out = model(bag.unsqueeze(0).to(device))
    logits = out.logits if isinstance(out, ModelOutput) else out
    if not maps:
        raise ConfigError(
            f"{type(model).__name__} has no ABMIL attention to show",
            hint="explain needs an attention-MIL model",
        )
    hazards = torch.sigmoid(logits).float().cpu()
    return maps[-1][0].float().cpu().numpy(), float(risk_score(hazards.double())[0])


def explain_patients(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    target: str,
    method: str,
    fold: int,
    patients: Sequence[str] | None = None,
    top: int | None = None,
    compare: str | None = None,
    patches: int = 8,
    overwrite: bool = False,
    scale: Scale = "absolute",
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Write the explanation pages of ``patients`` (or of the ``top`` highest- and lowest-risk
    test patients of the fold) for the model ``(target, method, fold)``.

    Args:
        method: a run folder, or a method with one run (``steph`` -> ``steph-top2``,
            :func:`steph.runs.resolve_run`).
        compare: a second method of the same fold drawn beside (e.g. ``cancer-specific``).
        patches: patches per montage row.
        scale: heatmap colours, ``absolute`` attention or ``percentile`` within the patient.

    Raises:
        ConfigError: neither or both of ``patients`` and ``top``.
        MissingArtifactError: the method (or ``compare``) has no trained ``fold``, or ``top``
            without the fold's predictions.
    """
    from ..data import load_cohort
    from ..runtime import resolve_device

    target = normalize_cancer(target)
    if (not patients) == (top is None):
        raise ConfigError("choose the patients: --patient P (repeatable) or --top N", hint="e.g. --top 2")
    from ..runs import resolve_run

    method = resolve_run(layout, target, method, config=config)
    compare = resolve_run(layout, target, compare, config=config) if compare else compare
    model_files = [trained_model_file(layout, target, m, fold) for m in (method, compare) if m]
    cohort = load_cohort(layout, config, target)
    report = StageReport(STAGE)
    risks = test_risks(layout, target, method, fold) if top is not None else {}
    chosen = extremes(risks, top) if top is not None else list(dict.fromkeys(patients or []))
    known = []

    def key_of(pid: str) -> str:
        return f"{target}/{method}/fold_{fold}/{pid}"

    for pid in chosen:
        if pid in cohort.patients:
            known.append(pid)
        else:
            report.add(
                key_of(pid),
                Status.FAILED,
                f"patient {pid} is not in {cohort.labels_path}; check the id "
                f"(e.g. {', '.join(list(cohort.patients)[:3])})",
            )
    images = slide_files(layout)
    device = resolve_device(config.train.device)
    models: dict[str, nn.Module] = {}
    sources = _sources(layout, target, method, fold)
    made_from = ExplainRecord(
        compare=compare,
        patches=patches,
        scale=scale,
        version=__version__,
        models={str(p): sha256_file(p) for p in model_files},
    )
    try:
        fold_risks = risks or test_risks(layout, target, method, fold)
    except StephError:
        fold_risks = {}
    expected = theta0_dim_in(layout)  # every project model takes theta0's D
    progress.start(STAGE, len(known), unit="patients")
    for pid in known:
        key = key_of(pid)
        try:
            files = {
                sid: layout.features(config.encoder, sid, cancer=target)
                for sid in cohort.patients[pid].slide_ids
            }
            for sid, path in files.items():  # D and patch count from the header, before reading
                checked_shape(
                    config, store_for(path).ref(path, sid), dim=expected, dim_of=f"theta0 {layout.theta0}"
                )
            slides = [read_slide_patches(path, sid) for sid, path in files.items()]
            record = replace(made_from, features=_stamps(layout, config.encoder, target, slides))
            if not overwrite and _unchanged(layout.patient_record(target, pid, method, fold), record):
                report.add(key, Status.SKIPPED, "explained already (use --overwrite to redo)")
                continue
            bag = torch.cat([s.features for s in slides])
            for m in (method, compare):
                if m and m not in models:
                    models[m] = _project_module(layout, config, target, m, fold, bag.shape[1], device)
            attention, risk = run_attention(models[method], bag, device)
            transfer = stored_transfer(layout, target, method, fold, pid)
            origin = "coefficients.csv of the run"
            if transfer is None:
                transfer = live_transfer(getattr(models[method], "last_extras", {}), sources)
                origin = "computed now (not a test patient of this fold)"
            other = run_attention(models[compare], bag, device)[0] if compare else None
            inputs = slide_inputs(slides, attention, other, images)
            role = "test" if pid in fold_risks else "training"
            facts = [("target / fold", f"{target} / fold {fold} ({role} patient)")]
            if pid in fold_risks:
                rank = 1 + sum(r > fold_risks[pid] for r in fold_risks.values())
                facts.append(
                    ("risk rank in the fold's test set", f"{rank} of {len(fold_risks)} (1 = highest)")
                )
            facts.append(("slides", ", ".join(s.slide_id for s in slides)))
            if transfer is not None:
                facts.append(("transfer coefficients", origin))
            folder = layout.patient_dir(target, pid, method, fold)
            index = layout.patients_index(target)
            page = render_patient(
                folder,
                pid,
                inputs,
                model=method,
                compare_model=compare,
                transfer=transfer,
                risk=risk,
                top_n=patches,
                facts=facts,
                links=[("all patient pages", os.path.relpath(index, folder))],
                scale=scale,
            )
            done = layout.patient_record(target, pid, method, fold)
            if page.problems:  # not finished: the next run redoes it (e.g. once the slide is back)
                done.unlink(missing_ok=True)
            else:
                replace(record, files=[p.name for p in page.files]).write(done)
            page_files = [str(p) for p in page.files]
            details: dict[str, object] = {"files": page_files, "notices": page.notices, "risk": risk}
            if page.transfer is not None:
                bars = page.transfer
                details["transfer"] = {
                    "sources": list(transfer.sources) if transfer else [],
                    "w": list(bars.w),
                    "lambda": list(bars.lam),
                    "selected": list(bars.selected),
                    "none": bool(transfer is not None and transfer.none),
                }
            if page.problems:
                report.add(key, Status.FAILED, "; ".join(page.problems), **details)
            else:
                report.add(key, Status.DONE, f"{page.html}", **details)
        except StephError as exc:
            report.add(key, Status.FAILED, exc.message + (f"; fix: {exc.hint}" if exc.hint else ""))
        finally:
            progress.advance(STAGE, 1, item=pid)
    progress.finish(STAGE)
    report.outputs["index"] = str(_write_index(layout, target))
    report.outputs["pages"] = [
        str(layout.patient_page(target, pid, method, fold))
        for pid in known
        if layout.patient_page(target, pid, method, fold).is_file()
    ]
    return report


def _project_module(
    layout: ProjectLayout,
    config: ProjectConfig,
    target: str,
    method: str,
    fold: int,
    dim: int,
    device: torch.device,
) -> nn.Module:
    """The trained module of (target, method, fold), checked against the features' ``D``."""
    from ..evaluation.predictors import project_model

    model = project_model(layout, config, target, method, fold, device=device)
    if model.dim_in != dim:
        raise ConsistencyError(
            f"{target} {method} fold {fold} takes {model.dim_in}-dimensional features, "
            f"the patient's have {dim}",
            hint="explain with the encoder the model was trained on (`encoder:` in stephctl.yaml)",
        )
    return model.modules[0][1]


def _sources(layout: ProjectLayout, target: str, method: str, fold: int) -> list[str]:
    meta = layout.merged_meta(target, method, fold) if method != CANCER_SPECIFIC else None
    if meta is None or not meta.is_file():
        return []
    return list(MergeRecord.read(meta).sources)


def _stamps(
    layout: ProjectLayout, encoder: str, target: str, slides: Sequence[SlidePatches]
) -> dict[str, str]:
    out = {}
    for s in slides:
        path = layout.features(encoder, s.slide_id, cancer=target)
        stat = path.stat()
        out[s.slide_id] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return out


def _unchanged(path: Path, record: ExplainRecord) -> bool:
    """The explanation in ``path``'s folder was made from ``record`` (files aside) and its files exist."""
    if not path.is_file():
        return False
    try:
        done = ExplainRecord.read(path)
    except (OSError, DataError):
        return False
    return replace(done, files=[]) == record and all((path.parent / f).is_file() for f in done.files)


def _write_index(layout: ProjectLayout, target: str) -> Path:
    index = layout.patients_index(target)
    rows = []
    for page in layout.patient_pages(target):
        run = page.parent.name
        rows.append((page.parent.parent.name, run, os.path.relpath(page, index.parent)))
    return write_index(index, f"{target}: patient pages (stephctl explain)", rows)
