"""``stephctl export-sources`` / ``import-sources``: cancer task vectors that travel between labs.

A sources bundle holds ``theta0`` and ``task_vector/<CANCER>/fold_<k>`` parts; its card gives
``theta0_sha256``, ``architecture``, ``encoder`` (name, weights identity, D, patch size, MPP,
extraction), and per cancer its folds, cohort size and training-set size per fold. No patient
data leaves the lab: a task vector is a difference of model weights.

Importing writes each vector to ``task_vectors/<CANCER>/fold_<k>.safetensors`` with a record
like a local one plus ``imported_from`` (bundle sha256, card date and versions), so ``merge``
uses it as a source like any other. A project without theta0 takes the bundle's (its models
must then be trained from it); a project with one must have the same (sha256). A different
theta0, encoder, feature dimension D or architecture is refused with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoints import save_state_dict
from ..data.features import feature_shape
from ..errors import ConsistencyError, MissingArtifactError
from ..extractors.weights import weights_identity
from ..fileio import write_json
from ..layout import normalize_cancer
from ..locks import hold
from ..progress import NULL_PROGRESS, Progress
from ..records import ModelRecord, TaskVectorRecord
from ..report import StageReport, Status
from ..theta0 import check_abmil_state, load_theta0, save_theta0, versions
from .card import cohort_size, encoder_card
from .container import Bundle, read_bundle, write_bundle

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)

IMPORTED = "imported_from"


def _part(cancer: str, fold: int) -> str:
    return f"task_vector/{cancer}/fold_{int(fold)}"


def source_record(layout: ProjectLayout, config: ProjectConfig, cancer: str, fold: int) -> dict[str, Any]:
    """Card entry of a source: its cohort size and fold, and where it came from when imported."""
    path = layout.task_vector_meta(cancer, fold)
    extra = TaskVectorRecord.read(path).extra if path.is_file() else {}
    if IMPORTED in extra:
        return {"patients": extra.get("cohort_size"), "fold": fold, IMPORTED: extra[IMPORTED]}
    return {"patients": cohort_size(layout, config, cancer), "fold": fold}


def imported_cancers(layout: ProjectLayout) -> list[str]:
    """Cancers whose task vectors were brought in by ``import-sources``."""
    found = []
    for cancer in layout.task_vector_cancers():
        if any(
            IMPORTED in TaskVectorRecord.read(layout.task_vector_meta(cancer, k)).extra
            for k in layout.task_vector_folds(cancer)
        ):
            found.append(cancer)
    return found


def export_sources(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: Sequence[str],
    folds: Sequence[int] | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Write the task vectors of ``cancers`` (``folds``, default every fold computed) with theta0.

    Raises:
        MissingArtifactError: theta0 or a task vector is missing (names the command).
        ConsistencyError: a vector was made from another theta0, or a file changed (sha256).
    """
    from ..task_vectors import load_task_vector

    names = [normalize_cancer(c) for c in cancers]
    theta0 = load_theta0(layout)
    report = StageReport("export-sources")
    path = Path(out) if out is not None else layout.sources_bundle(names)
    if path.exists() and not overwrite:
        report.add(path.name, Status.SKIPPED, f"{path} exists (use --overwrite to replace it)")
        report.outputs["bundle"] = str(path)
        return report
    parts: dict[str, Any] = {"theta0": theta0.state}
    entries: dict[str, dict[str, Any]] = {}
    progress.start("export-sources", len(names), unit="cancers")
    for cancer in names:
        chosen = (
            list(folds) if folds else [k for k in range(100) if layout.task_vector_meta(cancer, k).is_file()]
        )
        if not chosen:
            raise MissingArtifactError(
                f"{cancer} has no task vectors under {layout.task_vectors_root}",
                hint=f"run `stephctl -p {layout.root} task-vector --cancer {cancer}`",
            )
        train: dict[str, Any] = {}
        for k in chosen:
            vector, record = load_task_vector(layout, cancer, k)
            if record.theta0_sha256 != theta0.sha256:
                raise ConsistencyError(
                    f"{cancer} fold {k} was made from another theta0 than the project's",
                    hint="recompute it with `stephctl task-vector --overwrite`",
                )
            parts[_part(cancer, k)] = vector
            meta = layout.model_meta(cancer, k)
            train[str(k)] = (
                ModelRecord.read(meta).n_train
                if meta.is_file()
                else record.extra.get("train_patients", {}).get(str(k))
            )
        entries[cancer] = {
            **source_record(layout, config, cancer, chosen[0]),
            "folds": chosen,
            "train_patients_per_fold": train,
        }
        entries[cancer].pop("fold", None)
        progress.advance("export-sources", 1, item=cancer)
    progress.finish("export-sources")
    card = {
        "theta0_sha256": theta0.sha256,
        "architecture": theta0.architecture,
        "encoder": encoder_card(layout, config, names[0], theta0.architecture["dim_in"]),
        "sources": entries,
        "stephctl": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    sha = write_bundle(path, "sources", parts, card)
    report.add(path.name, Status.DONE, f"{path} (sha256 {sha[:12]}...): {', '.join(names)}", sha256=sha)
    report.outputs.update(bundle=str(path), sha256=sha)
    return report


def check_compatible(layout: ProjectLayout, config: ProjectConfig, bundle: Bundle) -> None:
    """Refuse a sources bundle this project cannot merge with, listing every reason.

    The project's D is its theta0's ``dim_in``, else that of its extracted features; its encoder
    weights are compared when ``extract.weights`` names a file for the encoder.

    Raises:
        ConsistencyError: a different theta0 (sha256), encoder (name or weights), feature
            dimension D or architecture (dim_emb, dim_attn, time_bins) than the project's.
    """
    card, reasons = bundle.card, []
    encoder, arch = card["encoder"], dict(card["architecture"])
    if encoder["name"] != config.encoder:
        reasons.append(f"encoder {encoder['name']!r} (this project: {config.encoder!r})")
    elif config.extract.weights.get(config.encoder):
        mine = weights_identity(layout.slide_path(config.extract.weights[config.encoder]), "")
        if mine != encoder["weights"]:
            reasons.append(f"encoder weights {encoder['weights']} (this project: {mine})")
    theta0 = load_theta0(layout) if layout.theta0_meta.is_file() else None
    files = layout.own_feature_files(config.encoder)
    dim = theta0.architecture["dim_in"] if theta0 else (feature_shape(files[0])[1] if files else None)
    if dim is not None and dim != arch["dim_in"]:
        reasons.append(f"feature dimension D = {arch['dim_in']} (this project: {dim})")
    wanted = {
        "dim_emb": config.model.dim_emb,
        "dim_attn": config.model.dim_attn,
        "time_bins": config.model.time_bins,
    }
    if theta0 is not None:
        wanted = {k: theta0.architecture[k] for k in wanted}
    diff = [f"{k} {arch[k]} (this project: {v})" for k, v in wanted.items() if arch[k] != v]
    if diff:
        reasons.append("architecture " + ", ".join(diff))
    if theta0 is not None and theta0.sha256 != card["theta0_sha256"]:
        reasons.append(f"theta0 {card['theta0_sha256'][:12]}... (this project: {theta0.sha256[:12]}...)")
    if reasons:
        raise ConsistencyError(
            f"{bundle.path} cannot be merged in this project: different " + "; ".join(reasons),
            hint="task vectors add up only from the same theta0, encoder, D and architecture; ask the lab for "
            "vectors trained from your theta0 (share `models/null.safetensors` first) with your encoder",
        )


def import_sources(
    layout: ProjectLayout,
    config: ProjectConfig,
    bundle_path: Path,
    *,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Bring the task vectors of a sources bundle into the project (see the module docstring).

    Raises:
        MissingArtifactError, DataError, ConsistencyError: an unreadable, tampered or newer
            bundle (see :func:`~steph.bundles.container.read_bundle`) or an incompatible one
            (:func:`check_compatible`).
    """
    bundle = read_bundle(bundle_path, kind="sources")
    check_compatible(layout, config, bundle)
    report = StageReport("import-sources")
    card = bundle.card
    if not layout.theta0_meta.is_file():
        state = bundle.parts["theta0"]
        check_abmil_state(state, f"theta0 of {bundle.path}")
        installed = save_theta0(
            layout, state, {"source": f"{IMPORTED} {bundle.path.name}", "bundle_sha256": bundle.sha256}
        )
        if installed.sha256 != card["theta0_sha256"]:
            raise ConsistencyError(
                f"theta0 of {bundle.path} was not reproduced bit for bit", hint="please report it"
            )
        report.add("theta0", Status.DONE, f"installed from the bundle ({installed.sha256[:12]}...)")
    origin = {
        "bundle": bundle.path.name,
        "bundle_sha256": bundle.sha256,
        "created": card.get("created"),
        "stephctl": card.get("stephctl"),
    }
    names = [p for p in sorted(bundle.parts) if p.startswith("task_vector/")]
    progress.start("import-sources", len(names), unit="task vectors")
    for part in names:
        _, cancer, fold_name = part.split("/")
        fold = int(fold_name.rsplit("_", 1)[1])
        _import_vector(layout, bundle, part, cancer, fold, origin, overwrite, report)
        progress.advance("import-sources", 1, item=part)
    progress.finish("import-sources")
    report.outputs["directory"] = str(layout.task_vectors_root)
    return report


def _import_vector(
    layout: ProjectLayout,
    bundle: Bundle,
    part: str,
    cancer: str,
    fold: int,
    origin: dict[str, Any],
    overwrite: bool,
    report: StageReport,
) -> None:
    key = f"{cancer}/fold_{fold}"
    meta_path = layout.task_vector_meta(cancer, fold)
    entry = bundle.card["sources"][cancer]
    if meta_path.is_file() and not overwrite:
        record = TaskVectorRecord.read(meta_path).extra
        if record.get(IMPORTED, {}).get("part_sha256") == bundle.card["parts"][part]["sha256"]:
            report.add(key, Status.SKIPPED, "already imported from this bundle")
        else:
            what = "an imported" if IMPORTED in record else "this project's own"
            report.add(
                key,
                Status.FAILED,
                f"{meta_path} holds {what} task vector",
                hint="use --overwrite to replace it",
            )
        return
    vector = bundle.parts[part]
    provenance = {
        "kind": "task_vector",
        "cancer": cancer,
        "fold": fold,
        "theta0_sha256": bundle.card["theta0_sha256"],
        "architecture": bundle.card["architecture"],
    }
    with hold(meta_path, what=f"task vector {key}"):
        meta_path.unlink(missing_ok=True)
        sha = save_state_dict(layout.task_vector(cancer, fold), vector, provenance)
        record = {
            **provenance,
            "sha256": sha,
            "parameter_names": list(vector),
            "cohort_size": entry.get("patients"),
            "train_patients": entry.get("train_patients_per_fold", {}),
            IMPORTED: {**origin, "part_sha256": bundle.card["parts"][part]["sha256"]},
            "versions": versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json(meta_path, record)
    report.add(
        key,
        Status.DONE,
        f"{cancer} fold {fold} ({entry.get('patients')} patients) -> {layout.task_vector(cancer, fold)}",
    )
