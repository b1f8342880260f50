"""``stephctl export``: a trained model (one fold, or every fold as an ensemble) as one bundle.

Parts (see :mod:`steph.bundles.container`): ``theta0``; ``task_vector/<CANCER>/fold_<k>`` for
the target's vector of every exported fold and each source vector the method uses; for a merge
method ``weights/fold_<k>``, the trained hypernetwork/head/coefficients of that fold; for
``cancer-specific`` ``weights/fold_<k>`` is the trained ABMIL itself (= theta0 + tau_target, kept
as trained so predictions are bit-identical, not rounded through the sum). The card (:mod:`steph.bundles.card`)
adds ``target``, ``method`` (name, run, settings, model config), ``architecture``,
``theta0_sha256``, ``folds`` and ``models`` (per fold: its parts, seed, ``dim_in``,
``train_median_risk``, ``n_train``), ``ensemble`` and ``train_median_risk`` (of the one fold, or
the mean over folds for an ensemble, whose risk is the mean of the folds' risks).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from ..checkpoints import load_state_dict
from ..config import to_plain
from ..errors import ConfigError, ConsistencyError, MissingArtifactError
from ..evaluation.inputs import train_median_risk
from ..layout import CANCER_SPECIFIC, normalize_cancer
from ..progress import NULL_PROGRESS, Progress
from ..records import ModelRecord
from ..report import StageReport, Status
from ..task_vectors import subtract
from ..theta0 import Theta0, load_theta0
from .card import cohort_size, encoder_card, metrics_card, software, time_bins_card
from .container import write_bundle
from .sources import source_record

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)

STAGE = "export"


def vector_part(cancer: str, fold: int) -> str:
    return f"task_vector/{cancer}/fold_{int(fold)}"


def weights_part(fold: int) -> str:
    return f"weights/fold_{int(fold)}"


def model_folds(layout: ProjectLayout, target: str, method: str) -> list[int]:
    """Folds of (target, method) with a finished model."""
    if method == CANCER_SPECIFIC:
        return [k for k in layout.model_folds(target) if layout.model_meta(target, k).is_file()]
    return [k for k in layout.split_folds(target) if layout.merged_meta(target, method, k).is_file()]


def export_model(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    target: str,
    method: str,
    fold: int | None = None,
    all_folds: bool = False,
    out: Path | None = None,
    overwrite: bool = False,
    sign: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Write the bundle of (target, method, fold), or of every fold with ``all_folds``.

    Args:
        method: ``cancer-specific`` or a merge run folder (``steph``, ``ties``, ``steph-dense`` ...).
        out: the bundle file (default ``exports/<TARGET>-<method>-fold_<k>.safetensors`` or
            ``...-all-folds.safetensors``).
        sign: an SSH private key: also write ``<bundle>.sig`` (:func:`~steph.bundles.signing.sign_bundle`).

    Raises:
        ConfigError: neither or both of ``fold`` and ``all_folds``.
        MissingArtifactError: the model (or theta0, a task vector) does not exist.
        ConsistencyError: a file changed since training (sha256), or models of another theta0.
    """
    from ..runs import resolve_run

    target = normalize_cancer(target)
    method = resolve_run(layout, target, method, config=config)  # `-m steph` -> its one run, e.g. steph-top2
    if (fold is None) == (not all_folds):
        raise ConfigError("give exactly one of --fold K and --all-folds", hint="e.g. --fold 0")
    folds = model_folds(layout, target, method) if all_folds else [int(fold or 0)]
    if not folds:
        raise MissingArtifactError(
            f"no trained {method} model of {target} in {layout.root}",
            hint=f"run `stephctl merge --target {target}` (or train-source for cancer-specific) first",
        )
    default = layout.model_bundle(target, method, None if all_folds else folds[0])
    path = Path(out) if out is not None else default
    name = default.stem
    report = StageReport(STAGE)
    if path.exists() and not overwrite:
        report.add(name, Status.SKIPPED, f"{path} exists (use --overwrite to replace it)")
        report.outputs["bundle"] = str(path)
        return report
    progress.start("export", len(folds), unit="folds")
    parts: dict[str, dict[str, Tensor]] = {}
    models: list[dict[str, Any]] = []
    try:
        for k in folds:
            pack = (
                _cancer_specific(layout, config, target, k)
                if method == CANCER_SPECIFIC
                else _merged(layout, config, target, method, k)
            )
            theta0, fold_parts, entry = pack
            for key, state in fold_parts.items():
                parts.setdefault(key, state)
            entry["train_median_risk"] = train_median_risk(layout.result_metrics(target, method, k))
            models.append(entry)
            progress.advance("export", 1, item=f"fold {k}")
    finally:
        progress.finish("export")
    parts["theta0"] = theta0.state
    card = _card(layout, config, target, method, folds, all_folds, theta0, models)
    sha = write_bundle(path, "model", parts, card)
    log.info("exported %s to %s (sha256 %s)", name, path, sha[:12])
    signed = _sign(path, sign, report)
    report.add(name, Status.DONE, f"{path} (sha256 {sha[:12]}..., {len(folds)} fold(s)){signed}", sha256=sha)
    report.outputs.update(bundle=str(path), sha256=sha)
    return report


def _sign(path: Path, key: Path | None, report: StageReport) -> str:
    """Sign ``path`` with ``key`` when given; the text the report line ends with."""
    if key is None:
        return ""
    from .signing import sign_bundle

    signature = sign_bundle(path, key)
    report.outputs["signature"] = str(signature)
    return f", signed: {signature.name}"


def _cancer_specific(
    layout: ProjectLayout, config: ProjectConfig, target: str, fold: int
) -> tuple[Theta0, dict[str, dict[str, Tensor]], dict[str, Any]]:
    theta0 = load_theta0(layout)
    meta_path = layout.model_meta(target, fold)
    if not meta_path.is_file():
        raise MissingArtifactError(
            f"no trained {target} fold {fold} model: {meta_path}",
            hint=f"run `stephctl -p {layout.root} train-source --cancer {target} --fold {fold}`",
        )
    meta = ModelRecord.read(meta_path)
    if meta.theta0_sha256 != theta0.sha256:
        raise ConsistencyError(
            f"{target} fold {fold} was not trained from the project's theta0",
            hint=f"retrain it: `stephctl train-source --cancer {target} --fold {fold} --overwrite`",
        )
    state = load_state_dict(layout.model_weights(target, fold), what=f"{target} fold {fold} model")
    entry = {
        "fold": fold,
        "target_vector": vector_part(target, fold),
        "source_vectors": {},
        "weights": weights_part(fold),
        "method": CANCER_SPECIFIC,
        "seed": meta.seed,
        "dim_in": theta0.architecture["dim_in"],
        "n_train": meta.n_train,
        "settings": meta.config.get("train"),
        "model_config": meta.config.get("model", to_plain(config.model)),
    }
    return (
        theta0,
        {vector_part(target, fold): subtract(state, theta0.state), weights_part(fold): state},
        entry,
    )


def _merged(
    layout: ProjectLayout, config: ProjectConfig, target: str, run: str, fold: int
) -> tuple[Theta0, dict[str, dict[str, Tensor]], dict[str, Any]]:
    from ..merging.loading import read_merged_parts

    parts = read_merged_parts(layout, config, target, run, fold)
    theta0 = Theta0(parts.theta0, parts.theta0_sha256, {})
    record = parts.record
    source_fold = int(record.source_fold) if record is not None else 0
    out = {vector_part(target, fold): parts.target_vector, weights_part(fold): parts.state}
    for name, vector in zip(parts.source_names, parts.source_vectors, strict=True):
        out[vector_part(name, source_fold)] = vector
    entry = {
        "fold": fold,
        "target_vector": vector_part(target, fold),
        "source_vectors": {name: vector_part(name, source_fold) for name in parts.source_names},
        "weights": weights_part(fold),
        "seed": parts.seed,
        "dim_in": parts.dim_in,
        "n_train": record.n_train if record is not None else None,
        "method": parts.method,
        "settings": to_plain(parts.merge_config),
        "model_config": to_plain(parts.model_config),
        "vector_sha256": parts.vector_hashes,
    }
    return theta0, out, entry


def _card(
    layout: ProjectLayout,
    config: ProjectConfig,
    target: str,
    run: str,
    folds: Sequence[int],
    ensemble: bool,
    theta0: Theta0,
    models: list[dict[str, Any]],
) -> dict[str, Any]:
    from ..config import ModelConfig

    first = models[0]
    model_config = ModelConfig(**first["model_config"])
    sources = sorted({s for m in models for s in m["source_vectors"]})
    source_fold = next((int(p.rsplit("_", 1)[1]) for m in models for p in m["source_vectors"].values()), None)
    medians = [m["train_median_risk"] for m in models]
    cut = (
        (statistics.fmean(medians) if ensemble else medians[0])
        if all(v is not None for v in medians)
        else None
    )
    return {
        "target": target,
        "method": {
            "name": first.get("method", CANCER_SPECIFIC),
            "run": run,
            "settings": first["settings"],
            "model": first["model_config"],
        },
        "architecture": theta0.architecture,
        "theta0_sha256": theta0.sha256,
        "encoder": encoder_card(layout, config, target, int(first["dim_in"])),
        "time_bins": time_bins_card(model_config),
        "cohorts": {
            "target": {
                "cancer": target,
                "patients": cohort_size(layout, config, target),
                "train_patients_per_fold": {str(m["fold"]): m["n_train"] for m in models},
            },
            "sources": {s: source_record(layout, config, s, source_fold or 0) for s in sources},
        },
        "metrics": metrics_card(layout, target, run),
        "folds": list(folds),
        "ensemble": ensemble,
        "risk": "risk = -sum_j S_j (higher = riskier)"
        + (
            "; the ensemble's survival curve is the mean of the folds' curves, so its risk is their mean risk"
            if ensemble
            else ""
        ),
        "train_median_risk": cut,
        "risk_group": "high when risk > train_median_risk (the training median"
        + (", averaged over folds)" if ensemble else ")"),
        "models": models,
        "stephctl": software(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
