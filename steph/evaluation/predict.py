"""Prediction on new, unlabelled patients with a trained cancer-specific or merged model.

The manifest is a CSV with one row per slide and columns ``patient_id`` and ``slide_id`` (or
``pathology_id``); other columns are ignored, so ``slides/manifest.csv`` works as is. The
slides' features must already be extracted (``stephctl extract``) with the project's encoder.
Each patient's slides form one bag and the model is run once per patient (STEPH merges its
weights per patient inside that single forward pass).

Outputs in ``predictions/<name>/``: ``predictions.csv`` (patient_id, risk, risk_group,
hazard_1..hazard_T; risk = -sum_j S_j, higher = riskier; risk_group splits at the model's
training median risk when its metrics.json records one), ``survival.csv`` (patient_id and
S at the end of every bin, ``surv_<day>d``) and ``meta.json`` (model, manifest and versions).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ConsistencyError, DataError, MissingArtifactError
from ..fileio import read_json, sha256_file, write_csv, write_json
from ..layout import CANCER_SPECIFIC, ProjectLayout, check_safe_id, normalize_cancer
from ..locks import hold
from ..progress import NULL_PROGRESS, Progress
from ..report import StageReport, Status
from ..runtime import resolve_device
from ..survival import risk_score, survival_curve
from .inputs import train_median_risk

if TYPE_CHECKING:
    from ..config import ProjectConfig

log = logging.getLogger(__name__)

STAGE = "predict"
SLIDE_COLUMNS = ("slide_id", "pathology_id")
OUTPUTS = ("predictions.csv", "survival.csv", "meta.json")


def read_manifest(path: Path) -> dict[str, tuple[str, ...]]:
    """Patient id -> its slide ids (file order), from a manifest CSV.

    Raises:
        MissingArtifactError: the file does not exist.
        DataError: a column is missing, a cell is empty, a slide id is unsafe or listed twice.
    """
    if not path.is_file():
        raise MissingArtifactError(
            f"manifest not found: {path}", hint="a CSV with columns patient_id,slide_id"
        )
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        slide_col = next((c for c in SLIDE_COLUMNS if c in header), None)
        if "patient_id" not in header or slide_col is None:
            raise DataError(
                f"{path}: needs columns patient_id and slide_id (found: {', '.join(header) or 'none'})",
                hint="one row per slide; slides/manifest.csv has this format",
            )
        patients: dict[str, list[str]] = {}
        seen: set[str] = set()
        for row_no, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            pid, sid = row["patient_id"], row[slide_col]
            if not pid or not sid:
                raise DataError(f"{path}, row {row_no}: patient_id and {slide_col} must not be empty")
            check_safe_id(sid)
            if sid in seen:
                raise DataError(f"{path}, row {row_no}: slide {sid} is listed twice")
            seen.add(sid)
            patients.setdefault(pid, []).append(sid)
    if not patients:
        raise DataError(f"{path} has no data rows", hint="one row per slide: patient_id,slide_id")
    return {pid: tuple(sids) for pid, sids in patients.items()}


def load_predictor(
    layout: ProjectLayout,
    config: ProjectConfig,
    target: str,
    method: str,
    fold: int,
    *,
    dim_in: int,
    device: torch.device,
) -> tuple[nn.Module, list[Path]]:
    """The trained model of (target, method, fold) in eval mode, and the files it came from.

    ``cancer-specific`` is the ABMIL of ``models/<target>/fold_<k>/``; any other method is the
    merged model of ``merged/<target>/<method>/fold_<k>/``.

    Raises:
        MissingArtifactError: the model has not been trained.
        ConsistencyError: its input dimension differs from the features' ``dim_in``.
    """
    if method == CANCER_SPECIFIC:
        from ..checkpoints import load_state_dict
        from ..models.abmil import architecture_of, create_abmil

        path = layout.model_weights(target, fold)
        state = load_state_dict(
            path,
            what=f"{target} fold {fold} model",
            hint=f"run `stephctl train-source -c {target} -k {fold}`",
        )
        arch = architecture_of(state)
        _check_dim(arch["dim_in"], dim_in, path)
        wanted = {k: getattr(config.model, k) for k in ("dim_emb", "dim_attn", "time_bins")}
        differ = [
            f"model.{k} = {v} but the weights have {arch[k]}" for k, v in wanted.items() if arch[k] != v
        ]
        if differ:
            raise ConsistencyError(
                f"{path}: {'; '.join(differ)}", hint="use the stephctl.yaml the model was trained with"
            )
        model = create_abmil(dim_in, config.model)
        model.load_state_dict(state)
        return model.to(device).eval(), [path]
    from ..merging import load_merged_model

    meta = layout.merged_file(target, method, fold, "meta.json")
    predictor = load_merged_model(layout, config, target, method, fold, device=device)
    _check_dim(int(read_json(meta)["dim_in"]), dim_in, meta)
    return predictor, [meta]


def _check_dim(expected: int, found: int, where: Path) -> None:
    if expected != found:
        raise ConsistencyError(
            f"{where}: the model takes {expected}-dimensional features, the manifest's slides have {found}",
            hint="extract the slides with the encoder the model was trained on",
        )


def default_run_name(target: str, method: str, fold: int) -> str:
    return f"{target}_{method}_fold_{int(fold)}"


def predict_patients(
    layout: ProjectLayout,
    config: ProjectConfig,
    manifest: Path,
    *,
    target: str,
    method: str,
    fold: int,
    name: str | None = None,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Run a trained model on the patients of ``manifest``; write ``predictions/<name>/``.

    Args:
        manifest: CSV with patient_id and slide_id columns (see the module docstring).
        target, method, fold: which trained model (``cancer-specific`` or a merge run folder).
        name: output folder under ``predictions/`` (default ``<target>_<method>_fold_<k>``).
        overwrite: redo a prediction whose outputs exist (otherwise it is skipped).

    Raises:
        MissingArtifactError: manifest, feature files or model missing (with the command that
            makes them).
        DataError, ConsistencyError: malformed manifest or features, or features of another
            dimension than the model's.
        LockedError: another process is writing the same output.
    """
    from ..data import Cohort, Patient, open_bags
    from ..training.loop import predict

    target = normalize_cancer(target)
    report = StageReport(STAGE)
    name = name or default_run_name(target, method, fold)
    outputs = [layout.predict_file(name, f) for f in OUTPUTS]
    slides = read_manifest(manifest)
    if all(p.is_file() for p in outputs) and not overwrite:
        done = read_json(outputs[-1])
        same = (done.get("target"), done.get("method"), done.get("fold"), done.get("manifest_sha256"))
        if same != (target, method, fold, sha256_file(manifest)):
            raise ConfigError(
                f"{layout.predict_dir(name)} holds a prediction of another model or manifest",
                hint="choose another --name, or --overwrite to replace it",
            )
        report.add(name, Status.SKIPPED, f"{layout.predict_dir(name)} exists (use --overwrite to redo)")
        return report
    # unlabelled patients: the cohort only carries the slides (t and e are unknown)
    cohort = Cohort(target, {pid: Patient(pid, sids, math.nan, 0) for pid, sids in slides.items()}, None)
    ids = list(slides)
    bags = open_bags(layout, config, cohort, ids, progress=progress)
    device = resolve_device(config.train.device)
    model, model_files = load_predictor(layout, config, target, method, fold, dim_in=bags.dim, device=device)
    with hold(outputs[-1], what=f"prediction {name}"), torch.inference_mode():
        hazards, _ = predict(
            model,
            ids,
            bags,
            device=device,
            max_batch_patches=config.train.max_bag_batch_patches,
            precision=config.train.precision,
        )
        cut = train_median_risk(layout.result_metrics(target, method, fold))
        _write_outputs(layout, config, name, ids, hazards, cut)
        write_json(
            outputs[-1],
            {
                "target": target,
                "method": method,
                "fold": fold,
                "model_files": {str(p): sha256_file(p) for p in model_files},
                "manifest": str(manifest),
                "manifest_sha256": sha256_file(manifest),
                "patients": len(ids),
                "train_median_risk": cut,
                "encoder": config.encoder,
            },
        )
    log.info("%s: %d patients predicted with %s/%s fold %d", name, len(ids), target, method, fold)
    report.add(name, Status.DONE, f"{len(ids)} patients -> {layout.predict_dir(name)}", patients=len(ids))
    report.outputs["predictions"] = str(outputs[0])
    return report


def _write_outputs(
    layout: ProjectLayout,
    config: ProjectConfig,
    name: str,
    ids: Sequence[str],
    hazards: Tensor,
    cut: float | None,
) -> None:
    hazards = hazards.double()
    risk = risk_score(hazards).tolist()
    surv = survival_curve(hazards).tolist()
    bins = hazards.shape[1]
    groups = ["" if cut is None else ("high" if r > cut else "low") for r in risk]
    write_csv(
        layout.predict_file(name, "predictions.csv"),
        ["patient_id", "risk", "risk_group", *(f"hazard_{j + 1}" for j in range(bins))],
        [[pid, risk[i], groups[i], *hazards[i].tolist()] for i, pid in enumerate(ids)],
    )
    width = config.model.bin_width_days
    write_csv(
        layout.predict_file(name, "survival.csv"),
        ["patient_id", *(f"surv_{(j + 1) * width:g}d" for j in range(bins))],
        [[pid, *surv[i]] for i, pid in enumerate(ids)],
    )
