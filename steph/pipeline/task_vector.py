"""``stephctl task-vector``: tau = theta - theta0 for every trained cancer model.

Each unit (cancer x fold) reads ``layout.model_weights(c, k)``, subtracts the project's theta0
from every tensor and writes ``layout.task_vector(c, k)`` (safetensors, same tensor names as
the model, with metadata) and then ``layout.task_vector_meta(c, k)`` (JSON; written last, so its
presence marks the unit done). Task arithmetic only makes sense between models that started
from the same weights, so a model whose recorded theta0 hash or architecture differs from the
project's theta0 is refused before anything is written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..checkpoints import load_state_dict, save_state_dict
from ..config.project import project_cancers, project_folds
from ..errors import ConsistencyError, DataError, LockedError, MissingArtifactError, StephError
from ..faults import point
from ..fileio import os_error_message, read_json, sha256_file
from ..layout import normalize_cancer
from ..locks import hold
from ..progress import NULL_PROGRESS, Progress
from ..records import ModelRecord, TaskVectorRecord
from ..report import StageReport, Status
from ..task_vectors import load_task_vector, subtract
from ..theta0 import Theta0, check_abmil_state, load_theta0, versions
from ..units import WorkUnit

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)

STAGE = "task-vector"


def _cancers(layout: ProjectLayout, config: ProjectConfig, cancers: Sequence[str] | None) -> list[str]:
    if cancers:
        return [normalize_cancer(c) for c in cancers]
    return project_cancers(layout, config)


def plan_task_vectors(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
) -> list[WorkUnit]:
    """One unit per model (cancer x fold); ``folds`` None = every fold the project trains
    (:func:`~steph.pipeline.train_source.project_folds`) and every trained fold.

    A model counts as trained only when its record (``meta.json``) exists. With ``folds`` None,
    such a fold whose model is not trained is still a unit (``params["trained"]`` False): the
    stage fails it instead of silently leaving it out.

    Raises:
        MissingArtifactError: a requested model is not trained (lists all, with the command),
            or no model is trained at all.
    """
    units: list[WorkUnit] = []
    missing: list[tuple[str, int]] = []
    for cancer in _cancers(layout, config, cancers):
        trained = [k for k in layout.model_folds(cancer) if layout.model_meta(cancer, k).is_file()]
        if folds is not None:
            chosen = [int(k) for k in folds]
            missing += [(cancer, k) for k in chosen if k not in trained]
            chosen = [k for k in chosen if k in trained]
        else:
            chosen = sorted(set(trained) | set(project_folds(layout, config, cancer))) if trained else []
        for fold in chosen:
            outputs = (layout.task_vector(cancer, fold), layout.task_vector_meta(cancer, fold))
            params = {"cancer": cancer, "fold": int(fold), "trained": fold in trained}
            units.append(WorkUnit(STAGE, f"{cancer}/fold_{fold}", outputs, params))
    if missing:
        listing = ", ".join(f"{c} fold {k}" for c, k in missing)
        first = missing[0]
        raise MissingArtifactError(
            f"no trained model for {listing} (expected {layout.model_meta(*first)})",
            hint=f"train them first, e.g. `stephctl -p {layout.root} train-source --cancer {first[0]} --fold {first[1]}`",
        )
    if not any(u.params["trained"] for u in units):
        raise MissingArtifactError(
            f"no trained cancer models under {layout.models_root}",
            hint=f"run `stephctl -p {layout.root} train-source` first",
        )
    return units


def _model_record(layout: ProjectLayout, cancer: str, fold: int) -> ModelRecord:
    path = layout.model_meta(cancer, fold)
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} cannot be read: {exc}", hint="retrain this model with --overwrite") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a JSON object", hint="retrain this model with --overwrite")
    return ModelRecord.from_json(data, str(path))


def check_models(layout: ProjectLayout, units: Sequence[WorkUnit], theta0: Theta0) -> None:
    """Refuse, before any work, models that did not start from the project's theta0.

    Raises:
        ConsistencyError: a model's meta.json records another theta0 sha256 (or none), or an
            architecture different from theta0's (lists every offending model).
    """
    problems: list[str] = []
    for unit in units:
        cancer, fold = unit.params["cancer"], unit.params["fold"]
        record = _model_record(layout, cancer, fold)
        recorded = record.theta0_sha256
        if recorded != theta0.sha256:
            shown = f"{str(recorded)[:12]}..." if recorded else "none"
            problems.append(
                f"{cancer} fold {fold}: theta0 sha256 {shown} (project theta0 {theta0.sha256[:12]}...)"
            )
            continue
        arch = record.architecture
        if isinstance(arch, dict):
            diff = [
                f"{k} {arch[k]} vs {v}" for k, v in theta0.architecture.items() if k in arch and arch[k] != v
            ]
            if diff:
                problems.append(f"{cancer} fold {fold}: architecture differs from theta0 ({', '.join(diff)})")
    if problems:
        raise ConsistencyError(
            "task vectors need every model to start from the project's theta0 with the same architecture, "
            "otherwise theta - theta0 is not a shared coordinate system; refused: " + "; ".join(problems),
            hint="retrain those models from this theta0 with `stephctl train-source --cancer C --fold K --overwrite`",
        )


def _relative(layout: ProjectLayout, path: Path) -> str:
    try:
        return str(path.relative_to(layout.root))
    except ValueError:
        return str(path)


def write_task_vector(layout: ProjectLayout, cancer: str, fold: int, theta0: Theta0) -> TaskVectorRecord:
    """Compute and write one task vector and its record; returns the record."""
    weights = layout.model_weights(cancer, fold)
    state = load_state_dict(
        weights,
        what=f"{cancer} fold {fold} model",
        hint=f"retrain it with `stephctl -p {layout.root} train-source --cancer {cancer} --fold {fold} --overwrite`",
    )
    arch = check_abmil_state(state, str(weights))
    if arch != theta0.architecture:
        raise ConsistencyError(
            f"{weights}: architecture {arch} differs from theta0's {theta0.architecture}",
            hint="task arithmetic needs the same architecture as theta0; retrain with `stephctl train-source --overwrite`",
        )
    model_sha = sha256_file(weights)
    recorded = _model_record(layout, cancer, fold).model_sha256
    if recorded is not None and recorded != model_sha:
        raise ConsistencyError(
            f"{weights} changed after training (sha256 {model_sha[:12]}... vs {str(recorded)[:12]}... in meta.json)",
            hint=f"retrain it with `stephctl train-source --cancer {cancer} --fold {fold} --overwrite`",
        )
    tau = subtract(state, theta0.state)
    provenance = {
        "kind": "task_vector",
        "cancer": cancer,
        "fold": fold,
        "theta0_sha256": theta0.sha256,
        "source_model": _relative(layout, weights),
        "source_model_sha256": model_sha,
        "architecture": arch,
    }
    sha = save_state_dict(layout.task_vector(cancer, fold), tau, provenance)
    record = TaskVectorRecord(
        **provenance,
        sha256=sha,
        parameter_names=list(tau),
        versions=versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    record.write(layout.task_vector_meta(cancer, fold))
    return record


def compute_task_vectors(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Write the task vector of every planned model (skipping done ones unless ``overwrite``).

    Raises:
        MissingArtifactError: theta0 or a requested model is missing.
        ConsistencyError: a model did not start from the project's theta0 (see :func:`check_models`).
    """
    units = plan_task_vectors(layout, config, cancers=cancers, folds=folds)
    theta0 = load_theta0(layout, model=config.model)
    check_models(layout, [u for u in units if u.params["trained"]], theta0)
    report = StageReport(STAGE)
    progress.start("task vectors", len(units), unit="models")
    try:
        for unit in units:
            if not unit.params["trained"]:
                cancer, fold = unit.params["cancer"], unit.params["fold"]
                report.add(
                    unit.key,
                    Status.FAILED,
                    f"no trained model (no record {layout.model_meta(cancer, fold)}; "
                    f"hint: `stephctl -p {layout.root} train-source --cancer {cancer} --fold {fold}`)",
                )
            elif unit.done and not overwrite:
                report.add(unit.key, Status.SKIPPED, "exists (use --overwrite to recompute)")
            else:
                _run_unit(layout, unit, theta0, overwrite, report)
            progress.advance("task vectors", 1, item=unit.key)
    finally:
        progress.finish("task vectors")
    report.outputs["directory"] = str(layout.task_vectors_root)
    return report


def _run_unit(
    layout: ProjectLayout, unit: WorkUnit, theta0: Theta0, overwrite: bool, report: StageReport
) -> None:
    cancer, fold = unit.params["cancer"], unit.params["fold"]
    meta = layout.task_vector_meta(cancer, fold)
    try:
        with hold(meta, what=f"task vector {unit.key}", stage=STAGE):
            if unit.done and not overwrite:  # another process finished it meanwhile
                report.add(unit.key, Status.SKIPPED, "written by another process")
                return
            meta.unlink(missing_ok=True)  # written last: absent until the vector is complete
            point(f"{STAGE}:locked")
            record = write_task_vector(layout, cancer, fold, theta0)
    except LockedError as exc:
        report.add(unit.key, Status.LOCKED, str(exc))
        return
    except StephError as exc:
        log.error("task vector %s failed: %s", unit.key, exc)
        report.add(unit.key, Status.FAILED, str(exc))
        return
    except OSError as exc:
        message = os_error_message(exc, f"task vector {unit.key}")
        log.error("%s", message)
        report.add(unit.key, Status.FAILED, message)
        return
    sha = str(record.sha256)
    log.info("task vector %s written (sha256 %s)", unit.key, sha[:12])
    report.add(unit.key, Status.DONE, f"sha256 {sha[:12]}", path=str(layout.task_vector(cancer, fold)))


__all__ = [
    "check_models",
    "compute_task_vectors",
    "load_task_vector",
    "plan_task_vectors",
    "write_task_vector",
]
