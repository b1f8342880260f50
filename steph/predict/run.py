"""``stephctl predict``: risk for new, unlabelled patients, from raw slides or from features.

The model is a bundle (``stephctl export``; verified on load) or a trained model of the project
(``--target/--method/--fold``). Inputs are a manifest or slide files
(:mod:`~steph.predict.inputs`); features are reused or extracted the model's way
(:mod:`~steph.predict.features`). Each patient's slides form one bag and the model
runs once per patient (STEPH merges its weights per patient inside that forward pass).

Outputs in the run folder (``predictions/<name>/`` or ``--out``): ``predictions.csv``
(patient_id, risk, risk_group, hazard_1..hazard_T; risk = -sum_j S_j, higher = riskier;
risk_group splits at the model's training median risk when it is known), ``survival.csv``
(patient_id and S at the end of every yearly bin, ``surv_<day>d``), ``failures.csv`` (only when some
patients could not be predicted: the reason and the fix), with ``--explain`` the explain pages
of every patient under ``patients/<patient_id>/`` (:mod:`~steph.predict.explain`),
and ``meta.json`` (model identity, inputs, versions, pages; written last). A patient that fails
does not stop the others (exit 2); when none can be predicted, the first reason is raised (exit 1).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError, StephError
from ..evaluation.predictors import LoadedModel, project_model
from ..fileio import sha256_file, write_csv
from ..layout import PredictionLayout, ProjectLayout, normalize_cancer
from ..locks import hold
from ..progress import NULL_PROGRESS, Progress
from ..records import PredictionRecord
from ..report import StageReport, Status
from ..runtime import resolve_device
from ..theta0 import versions
from .features import FeatureMaker, read_bag, template_fields
from .inputs import PredictInputs, SlideInput, slide_inputs
from .inputs import read_manifest as read_predict_manifest

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from .explain import ExplainedPatient

log = logging.getLogger(__name__)

STAGE = "predict"


@dataclass(frozen=True)
class PatientCase:
    """One predicted patient: what a per-patient report (``--explain``) needs besides the model."""

    patient_id: str
    slide_ids: tuple[str, ...]
    feature_files: tuple[Path, ...]
    """Per slide: HDF5 with ``features`` [N, D] and ``coords`` [N, 2] (level-0 x, y) when extracted."""
    slide_files: tuple[Path | None, ...]
    """Per slide: the slide file, or None when only features were given."""

    def coords(self) -> list[np.ndarray | None]:
        """Per slide: level-0 ``[N, 2]`` patch coordinates in bag order (None when the file has none)."""
        from ..extraction.h5format import read_coords

        return [read_coords(path) for path in self.feature_files]


def read_manifest(path: Path, layout: ProjectLayout | None = None) -> PredictInputs:
    """Patients of a prediction manifest (see :mod:`~steph.predict.inputs`)."""
    return read_predict_manifest(path, layout or ProjectLayout(path.parent))


def default_run_name(target: str, method: str, fold: int) -> str:
    return f"{target}_{method}_fold_{int(fold)}"


def predict_patients(
    layout: ProjectLayout,
    config: ProjectConfig,
    manifest: Path | None = None,
    *,
    slides: Sequence[Path] = (),
    bundle: Path | None = None,
    target: str | None = None,
    method: str | None = None,
    fold: int | None = None,
    encoder_weights: Path | None = None,
    mpp: float | None = None,
    name: str | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    explain: bool = False,
    patches: int = 8,
    allow_download: bool = False,
    allowed_signers: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Predict the patients of ``manifest`` (or of ``slides``) with a bundle or a project model.

    Args:
        bundle: a model bundle; otherwise ``target``, ``method`` and ``fold`` name a project model.
        encoder_weights: local file of the model's encoder weights (for slides to extract).
        mpp: microns per pixel of slides that record none (as ``stephctl extract --mpp``).
        name, out: the run folder is ``out``, else ``predictions/<name>/`` of the project (name
            default: the bundle's file name, or ``<target>_<method>_fold_<k>``).
        overwrite: redo a finished run (otherwise it is skipped; a finished run without the
            ``explain`` pages asked for is redone).
        explain: also write each patient's explain pages under ``patients/<patient_id>/``
            (:mod:`~steph.predict.explain`; an ensemble shows its folds' mean attention).
        patches: most and least attended patches shown (each) in the explain montage.
        allow_download: let the encoder's weights come from the model hub when no local file is
            given (otherwise nothing is downloaded: slides to extract fail with an error naming
            the weights file to provide).
        allowed_signers: trust list (else ``allowed_signers:`` of stephctl.yaml): a bundle must
            carry a signature of a key it lists (:mod:`~steph.bundles.signing`).

    Raises:
        ConfigError: no or two models, no inputs, or a finished run of another model or inputs.
        MissingArtifactError, DataError, ConsistencyError: the model cannot be loaded (missing,
            tampered, newer format) or the manifest as a whole is unusable.
        LockedError: another process writes the same run.
    """
    if (bundle is None) == (target is None or method is None or fold is None):
        raise ConfigError(
            "give either --model BUNDLE or --target, --method and --fold",
            hint="e.g. --model BRCA.safetensors",
        )
    if (manifest is None) == (not slides):
        raise ConfigError(
            "give either slide files or --manifest CSV", hint="e.g. stephctl predict --manifest new.csv"
        )
    device = resolve_device(config.train.device)
    model = _load(layout, config, bundle, target, method, fold, encoder_weights, device, allowed_signers)
    run = PredictionLayout(out if out is not None else layout.predict_dir(name or model.name))
    inputs = read_manifest(manifest, layout) if manifest is not None else slide_inputs(slides)
    signature: dict[str, object] = {
        "model": {k: v for k, v in model.identity.items() if k not in ("card", "bundle")},  # sha256, not path
        "inputs": _inputs_id(manifest, inputs),
    }
    report = StageReport(STAGE)
    if explain:
        from . import explain as px
    if run.meta.is_file() and not overwrite:
        done = PredictionRecord.read(run.meta)
        if done.signature != signature:
            raise ConfigError(
                f"{run.root} holds a prediction of another model or manifest",
                hint="choose another --name/--out, or --overwrite to replace it",
            )
        pages = px.finished_pages(done, patches) if explain else []
        if pages is not None:
            report.add(run.root.name, Status.SKIPPED, f"{run.root} exists (use --overwrite to redo)")
            report.outputs["predictions"] = str(run.file("predictions.csv"))
            if explain:
                report.outputs["pages"] = pages
            return report
    with hold(run.meta, what=f"prediction {run.root.name}"):
        run.meta.unlink(missing_ok=True)
        cancer = normalize_cancer(target) if target else None
        fields = template_fields(
            layout, config, [s.slide_id for p in inputs.patients for s in p.slides], cancer
        )
        maker = FeatureMaker(
            layout,
            run,
            model,
            mpp=mpp,
            device=device,
            progress=progress,
            fields=fields,
            cancer=cancer,
            allow_download=allow_download,
        )
        with maker:
            cases, bags, failures = _gather(maker, model, inputs, config.max_patches, progress)
        if not cases:  # nothing to write: a user error (exit 1) with the first reason
            first = next(iter(failures.values()), None) or DataError("no patients to predict")
            if len(failures) > 1:
                first.message += f" (and {len(failures) - 1} other patient(s) could not be predicted either)"
            raise first
        ids = [c.patient_id for c in cases]
        from ..data import BagStore

        with torch.inference_mode():
            hazards, surv = model.predict(
                ids,
                BagStore.in_memory(bags),
                device=device,
                max_batch_patches=config.train.max_bag_batch_patches,
                precision=config.train.precision,
            )
        _write(run, model, ids, hazards, surv, failures)
        explained: dict[str, ExplainedPatient] = {}
        if explain:
            from ..explain.inputs import slide_files

            risks = dict(zip(ids, (-surv.sum(dim=1)).tolist(), strict=True))
            images = slide_files(layout) if layout.manifest.is_file() else {}
            for page in px.explain_cases(
                run, model, cases, bags, risks, device=device, top_n=patches, images=images, progress=progress
            ):
                explained[page.patient_id] = page
        meta = _meta(model, signature, manifest, inputs, cases, failures)
        if explain:
            meta = replace(meta, explain=px.explain_record(explained.values(), patches))
        meta.write(run.meta)
    for case in cases:
        report.add(case.patient_id, Status.DONE, f"{len(case.slide_ids)} slide(s)")
    if explain:
        px.add_pages(report, explained.values())
    for pid, exc in failures.items():
        report.add(pid, Status.FAILED, str(exc), hint=exc.hint)  # one line: what, where and the fix
    log.info("%s: %d patients predicted, %d failed", run.root, len(ids), len(failures))
    report.outputs.update(predictions=str(run.file("predictions.csv")), run=str(run.root))
    if explain:
        report.outputs["pages"] = [str(p.page) for p in explained.values() if p.page]
    return report


def _load(
    layout: ProjectLayout,
    config: ProjectConfig,
    bundle: Path | None,
    target: str | None,
    method: str | None,
    fold: int | None,
    encoder_weights: Path | None,
    device: torch.device,
    allowed_signers: Path | None = None,
) -> LoadedModel:
    if bundle is not None:
        from ..bundles.model import load_bundle_model
        from ..bundles.signing import trust_list, verify_bundle

        trusted = Path(allowed_signers) if allowed_signers is not None else trust_list(layout, config)
        signer = verify_bundle(Path(bundle), trusted) if trusted is not None else None
        model = load_bundle_model(bundle, device=device, weights_file=encoder_weights)
        if signer is not None:
            signer.check_read(Path(bundle), str(model.identity["bundle_sha256"]))
        return model
    assert target is not None and method is not None and fold is not None
    from ..runs import resolve_run

    method = resolve_run(layout, target, method, config=config)  # `-m steph` -> its one run, e.g. steph-top2
    model = project_model(layout, config, normalize_cancer(target), method, fold, device=device)
    if encoder_weights is not None:
        model = replace(model, encoder_weights_file=encoder_weights)
    return model


def _inputs_id(manifest: Path | None, inputs: PredictInputs) -> dict[str, object]:
    if manifest is not None:
        return {"manifest_sha256": sha256_file(manifest)}
    return {"slides": sorted(str(s.path) for p in inputs.patients for s in p.slides)}


def _gather(
    maker: FeatureMaker, model: LoadedModel, inputs: PredictInputs, max_patches: int, progress: Progress
) -> tuple[list[PatientCase], dict[str, Tensor], dict[str, StephError]]:
    """Features of every patient; a patient whose slide fails is set aside with its error. Each
    slide is asked for with the slides after it, so the next one to extract is prepared ahead."""
    failures: dict[str, StephError] = dict(inputs.problems)
    cases: list[PatientCase] = []
    bags: dict[str, Tensor] = {}
    queue = [(slide, patient.patient_id) for patient in inputs.patients for slide in patient.slides]

    def after(k: int) -> Iterator[tuple[SlideInput, str | None]]:
        return (queue[j] for j in range(k + 1, len(queue)))

    first = 0
    progress.start("patients", len(inputs.patients), unit="patients")
    try:
        for patient in inputs.patients:
            base, first = first, first + len(patient.slides)
            try:
                files = tuple(
                    maker.features(slide, patient.patient_id, upcoming=after(base + j))
                    for j, slide in enumerate(patient.slides)
                )
                bags[patient.patient_id] = read_bag(
                    list(files), model.dim_in, patient.patient_id, max_patches=max_patches
                )
            except StephError as exc:
                log.warning("patient %s not predicted: %s", patient.patient_id, exc)
                failures[patient.patient_id] = exc
            else:
                cases.append(
                    PatientCase(
                        patient.patient_id,
                        tuple(s.slide_id for s in patient.slides),
                        files,
                        tuple(s.path for s in patient.slides),
                    )
                )
            progress.advance("patients", 1, item=patient.patient_id)
    finally:
        progress.finish("patients")
    return cases, bags, failures


def _write(
    run: PredictionLayout,
    model: LoadedModel,
    ids: Sequence[str],
    hazards: Tensor,
    surv: Tensor,
    failures: dict[str, StephError],
) -> None:
    risk = (-surv.sum(dim=1)).tolist()
    cut = model.train_median_risk
    groups = ["" if cut is None else ("high" if r > cut else "low") for r in risk]
    bins = model.time_bins
    write_csv(
        run.file("predictions.csv"),
        ["patient_id", "risk", "risk_group", *(f"hazard_{j + 1}" for j in range(bins))],
        [[pid, risk[i], groups[i], *hazards[i].tolist()] for i, pid in enumerate(ids)],
    )
    write_csv(
        run.file("survival.csv"),
        ["patient_id", *(f"surv_{(j + 1) * model.bin_width_days:g}d" for j in range(bins))],
        [[pid, *surv[i].tolist()] for i, pid in enumerate(ids)],
    )
    run.file("failures.csv").unlink(missing_ok=True)
    if failures:
        write_csv(
            run.file("failures.csv"),
            ["patient_id", "error", "hint"],
            [[pid, exc.message, exc.hint or ""] for pid, exc in failures.items()],
        )


def _meta(
    model: LoadedModel,
    signature: dict[str, object],
    manifest: Path | None,
    inputs: PredictInputs,
    cases: list[PatientCase],
    failures: dict[str, StephError],
) -> PredictionRecord:
    return PredictionRecord(
        identity=dict(model.identity),
        signature=signature,
        manifest=None if manifest is None else str(manifest),
        patients=len(cases),
        failed=sorted(failures),
        slides={c.patient_id: dict(zip(c.slide_ids, map(str, c.feature_files), strict=True)) for c in cases},
        train_median_risk=model.train_median_risk,
        encoder=model.encoder,
        encoder_weights=model.encoder_weights,
        versions=versions(),
    )
