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
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoints import save_state_dict
from ..data.features import feature_shape
from ..errors import ConsistencyError, DataError, LayoutError, MissingArtifactError
from ..extractors.weights import weights_identity
from ..layout import normalize_cancer
from ..locks import hold
from ..models.abmil import architecture_of
from ..progress import NULL_PROGRESS, Progress
from ..records import IMPORTED, ModelRecord, TaskVectorRecord
from ..report import StageReport, Status
from ..theta0 import adopt_theta0, check_abmil_state, check_like_theta0, load_theta0, versions
from .card import cohort_size, encoder_card
from .container import Bundle, read_bundle, write_bundle

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)


def _part(cancer: str, fold: int) -> str:
    return f"task_vector/{cancer}/fold_{int(fold)}"


def source_record(layout: ProjectLayout, config: ProjectConfig, cancer: str, fold: int) -> dict[str, Any]:
    """Card entry of a source: its cohort size and fold, and where it came from when imported."""
    path = layout.task_vector_meta(cancer, fold)
    record = TaskVectorRecord.read(path) if path.is_file() else None
    if record is not None and record.imported_from is not None:
        return {"patients": record.cohort_size, "fold": fold, IMPORTED: record.imported_from}
    return {"patients": cohort_size(layout, config, cancer), "fold": fold}


def export_sources(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: Sequence[str],
    folds: Sequence[int] | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    sign: Path | None = None,
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
                else (record.train_patients or {}).get(str(k))
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
    signed = ""
    if sign is not None:  # ``<bundle>.sig`` next to it (steph.bundles.signing)
        from .signing import sign_bundle

        signature = sign_bundle(path, sign)
        report.outputs["signature"] = str(signature)
        signed = f", signed: {signature.name}"
    report.add(
        path.name, Status.DONE, f"{path} (sha256 {sha[:12]}...): {', '.join(names)}{signed}", sha256=sha
    )
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
    allowed_signers: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Bring the task vectors of a sources bundle into the project (see the module docstring).

    With a trust list (``allowed_signers``, else ``allowed_signers:`` of stephctl.yaml) the
    bundle must carry a signature of a listed key (:func:`~steph.bundles.signing.verify_bundle`);
    the signer is recorded with each vector, so ``merge`` can check it later.

    Everything is checked before anything is written: the card's structure, every part name
    (``task_vector/<CANCER>/fold_<k>``, the cancer by the project's naming rule), theta0 against
    the card's ``theta0_sha256`` and every vector against theta0 (keys, shapes, finite floats).

    Raises:
        MissingArtifactError, DataError, ConsistencyError: an unreadable, tampered or newer
            bundle (see :func:`~steph.bundles.container.read_bundle`), a malformed one (card,
            part names, theta0 or a vector) or an incompatible one (:func:`check_compatible`).
    """
    from .signing import trust_list, verify_bundle

    trusted = Path(allowed_signers) if allowed_signers is not None else trust_list(layout, config)
    signer = verify_bundle(Path(bundle_path), trusted) if trusted is not None else None
    bundle = read_bundle(bundle_path, kind="sources")
    if signer is not None:
        signer.check_read(bundle.path, bundle.sha256)
    vectors = check_sources_bundle(bundle)
    check_compatible(layout, config, bundle)
    report = StageReport("import-sources")
    card = bundle.card
    installed = adopt_theta0(
        layout,
        bundle.parts["theta0"],
        {"source": f"{IMPORTED} {bundle.path.name}", "bundle_sha256": bundle.sha256},
        sha256=str(card["theta0_sha256"]),
    )
    if installed is not None:
        report.add("theta0", Status.DONE, f"installed from the bundle ({installed.sha256[:12]}...)")
    origin = {
        "bundle": bundle.path.name,
        "bundle_sha256": bundle.sha256,
        "created": card.get("created"),
        "stephctl": card.get("stephctl"),
        **({"signer": signer.to_dict()} if signer is not None else {}),
    }
    progress.start("import-sources", len(vectors), unit="task vectors")
    for part, (cancer, fold) in vectors.items():
        _import_vector(layout, bundle, part, cancer, fold, origin, overwrite, report)
        progress.advance("import-sources", 1, item=part)
    progress.finish("import-sources")
    report.outputs["directory"] = str(layout.task_vectors_root)
    return report


_VECTOR_PART = re.compile(r"task_vector/([^/]+)/fold_(0|[1-9][0-9]{0,2})")
_ARCHITECTURE = ("dim_in", "dim_emb", "dim_attn", "time_bins")


def check_sources_bundle(bundle: Bundle) -> dict[str, tuple[str, int]]:
    """Check what a sources bundle says and holds; returns its vector parts -> (cancer, fold).

    Raises:
        DataError: a card field of the wrong type, a part that is not ``theta0`` or
            ``task_vector/<CANCER>/fold_<k>`` (cancer by :func:`~steph.layout.normalize_cancer`,
            ``0 <= k < 1000``), a part the card does not list under ``sources`` or the other way
            round, a theta0 that is not an ABMIL of the card's architecture, or a vector whose
            keys, shapes or values do not fit theta0.
    """
    card, where = bundle.card, str(bundle.path)
    entries = _card_sources(card, where)
    arch = card.get("architecture")
    if not isinstance(arch, dict) or not all(_is_int(arch.get(k)) for k in _ARCHITECTURE):
        raise _card_error(where, f"architecture must give integer {', '.join(_ARCHITECTURE)}")
    encoder = card.get("encoder")
    if not isinstance(encoder, dict) or not all(isinstance(encoder.get(k), str) for k in ("name", "weights")):
        raise _card_error(where, "encoder must give its name and weights")
    if not isinstance(card.get("theta0_sha256"), str):
        raise _card_error(where, "theta0_sha256 is missing")
    if "theta0" not in bundle.parts:
        raise DataError(f"{where}: the bundle has no theta0 part", hint=_NOT_OURS)
    theta0 = bundle.parts["theta0"]
    if check_abmil_state(theta0, f"theta0 of {where}") != {k: arch[k] for k in _ARCHITECTURE}:
        raise _card_error(where, f"architecture {arch} is not its theta0's {architecture_of(theta0)}")
    vectors: dict[str, tuple[str, int]] = {}
    for part in sorted(set(bundle.parts) - {"theta0"}):
        match = _VECTOR_PART.fullmatch(part)
        if match is None or _cancer_or_none(match.group(1)) != match.group(1):
            raise DataError(
                f"{where}: part {part!r} is not a task vector part",
                hint="a sources bundle holds theta0 and task_vector/<CANCER>/fold_<k> parts (CANCER such "
                "as BRCA, 0 <= k < 1000); " + _NOT_OURS,
            )
        cancer, fold = match.group(1), int(match.group(2))
        if fold not in entries.get(cancer, ()):
            raise DataError(f"{where}: part {part!r} is not listed in the card's sources", hint=_NOT_OURS)
        vectors[part] = (cancer, fold)
    listed = {_part(c, k) for c, folds in entries.items() for k in folds}
    if listed - set(vectors):
        raise DataError(
            f"{where}: the card lists {', '.join(sorted(listed - set(vectors)))} but the bundle has no such part",
            hint=_NOT_OURS,
        )
    for part in vectors:
        check_like_theta0(bundle.parts[part], theta0, f"{where}: {part}")
    return vectors


_NOT_OURS = "the bundle was not written by `stephctl export-sources`; ask its author for an intact copy"


def _card_sources(card: dict[str, Any], where: str) -> dict[str, list[int]]:
    sources = card.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise _card_error(where, "sources must map cancers to their folds")
    out: dict[str, list[int]] = {}
    for cancer, entry in sources.items():
        if _cancer_or_none(cancer) != cancer:
            raise _card_error(where, f"sources names {cancer!r}, not a cancer such as BRCA")
        if not isinstance(entry, dict) or not isinstance(entry.get("folds"), list):
            raise _card_error(where, f"sources.{cancer} must list its folds")
        if not all(_is_int(k) for k in entry["folds"]):
            raise _card_error(where, f"sources.{cancer}.folds must be integers")
        patients = entry.get("patients")
        if patients is not None and not _is_int(patients):
            raise _card_error(where, f"sources.{cancer}.patients must be an integer, not {patients!r}")
        train = entry.get("train_patients_per_fold", {})
        if not isinstance(train, dict) or not all(v is None or _is_int(v) for v in train.values()):
            raise _card_error(where, f"sources.{cancer}.train_patients_per_fold must map folds to integers")
        out[cancer] = list(entry["folds"])
    return out


def _card_error(where: str, what: str) -> DataError:
    return DataError(f"{where}: the sources card is malformed: {what}", hint=_NOT_OURS)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9


def _cancer_or_none(name: object) -> str | None:
    if not isinstance(name, str):
        return None
    try:
        return normalize_cancer(name)
    except LayoutError:
        return None


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
        held = TaskVectorRecord.read(meta_path)
        if (held.imported_from or {}).get("part_sha256") == bundle.card["parts"][part]["sha256"]:
            report.add(key, Status.SKIPPED, "already imported from this bundle")
        else:
            what = "an imported" if held.imported else "this project's own"
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
        record = TaskVectorRecord(
            cancer=cancer,
            fold=fold,
            theta0_sha256=bundle.card["theta0_sha256"],
            architecture=bundle.card["architecture"],
            sha256=sha,
            parameter_names=list(vector),
            cohort_size=entry.get("patients"),
            train_patients=entry.get("train_patients_per_fold", {}),
            imported_from={**origin, "part_sha256": bundle.card["parts"][part]["sha256"]},
            versions=versions(),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        record.write(meta_path)
    report.add(
        key,
        Status.DONE,
        f"{cancer} fold {fold} ({entry.get('patients')} patients) -> {layout.task_vector(cancer, fold)}",
    )
