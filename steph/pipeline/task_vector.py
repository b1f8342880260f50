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
from typing import TYPE_CHECKING, Any

from ..checkpoints import load_state_dict, save_state_dict
from ..errors import ConsistencyError, DataError, MissingArtifactError
from ..fileio import sha256_file
from ..progress import NULL_PROGRESS, Progress
from ..records import ModelRecord, TaskVectorRecord
from ..report import StageReport, Status
from ..task_vectors import load_task_vector, subtract
from ..theta0 import Theta0, check_abmil_state, load_theta0, versions
from ..units import ModelUnit, Outcome, UnitLock, run_units
from .plans import TASK_VECTOR as STAGE
from .plans import plan_task_vectors

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)
MAX_LISTED = 12
"""Models named in a "no trained model" error (the count of the others follows)."""


def _model_record(layout: ProjectLayout, cancer: str, fold: int) -> ModelRecord:
    path = layout.model_meta(cancer, fold)
    try:
        return ModelRecord.read(path)
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc}", hint="retrain this model with --overwrite") from exc


def check_models(layout: ProjectLayout, units: Sequence[ModelUnit], theta0: Theta0) -> None:
    """Refuse, before any work, models that did not start from the project's theta0.

    Raises:
        ConsistencyError: a model's meta.json records another theta0 sha256 (or none), or an
            architecture different from theta0's (lists every offending model).
    """
    problems: list[str] = []
    for unit in units:
        cancer, fold = unit.cancer, unit.fold
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
    provenance: dict[str, Any] = {
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


class TaskVectorWorker:
    """Writes the task vector of one unit; theta0 is loaded and every trained model of the run
    is checked against it once, before the first unit (:meth:`prepare`)."""

    def __init__(self, layout: ProjectLayout, theta0: Theta0, trained: set[tuple[str, int]]) -> None:
        self.layout, self.theta0, self.trained = layout, theta0, trained

    @classmethod
    def prepare(
        cls, layout: ProjectLayout, config: ProjectConfig, units: Sequence[ModelUnit], *, named: bool = True
    ) -> TaskVectorWorker:
        """Load theta0 and refuse, before any work, models that did not start from it.

        Args:
            named: The units were asked for one by one (``--fold K``, a task): every one needs
                its trained model. Otherwise a unit without one fails alone, unless none has one.

        Raises:
            MissingArtifactError: a named unit (or, unnamed, every unit) has no trained model
                (lists them, with the command), or theta0 is missing.
            ConsistencyError: a trained model did not start from the project's theta0
                (:func:`check_models`).
        """
        trained = {(u.cancer, u.fold) for u in units if layout.model_meta(u.cancer, u.fold).is_file()}
        missing = [u for u in units if (u.cancer, u.fold) not in trained]
        if missing and (named or len(missing) == len(units)):
            _no_models(layout, missing)
        theta0 = load_theta0(layout, model=config.model)
        check_models(layout, [u for u in units if (u.cancer, u.fold) in trained], theta0)
        return cls(layout, theta0, trained)

    def refuse(self, unit: ModelUnit) -> str | None:
        if (unit.cancer, unit.fold) in self.trained:
            return None
        return (
            f"no trained model (no record {self.layout.model_meta(unit.cancer, unit.fold)}; "
            f"hint: `stephctl -p {self.layout.root} train-source --cancer {unit.cancer} --fold {unit.fold}`)"
        )

    def skipped(self, unit: ModelUnit, *, by_other: bool) -> Outcome:
        why = "written by another process" if by_other else "exists (use --overwrite to recompute)"
        return Outcome(Status.SKIPPED, why)

    def lock(self, unit: ModelUnit) -> UnitLock:
        meta = self.layout.task_vector_meta(unit.cancer, unit.fold)
        return UnitLock(meta, f"task vector {unit.key}", record=meta)

    def run(self, unit: ModelUnit) -> Outcome:
        record = write_task_vector(self.layout, unit.cancer, unit.fold, self.theta0)
        sha = str(record.sha256)
        log.info("task vector %s written (sha256 %s)", unit.key, sha[:12])
        return Outcome(
            Status.DONE, f"sha256 {sha[:12]}", {"path": str(self.layout.task_vector(unit.cancer, unit.fold))}
        )


def _no_models(layout: ProjectLayout, units: Sequence[ModelUnit]) -> None:
    """Raise: none of ``units`` has a trained model."""
    listing = ", ".join(f"{u.cancer} fold {u.fold}" for u in units[:MAX_LISTED])
    if len(units) > MAX_LISTED:
        listing += f" and {len(units) - MAX_LISTED} more"
    first = units[0]
    raise MissingArtifactError(
        f"no trained model for {listing} (expected {layout.model_meta(first.cancer, first.fold)})",
        hint=f"train them first, e.g. `stephctl -p {layout.root} train-source --cancer {first.cancer} --fold {first.fold}`",
    )


def finish_report(layout: ProjectLayout, report: StageReport) -> StageReport:
    """The stage's outputs: the task-vector folder."""
    report.outputs["directory"] = str(layout.task_vectors_root)
    return report


def compute_task_vectors(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Write the task vector of every planned model (skipping done ones unless ``overwrite``);
    the stage ``task-vector`` on :func:`plan_task_vectors` (a unit without a trained model fails).

    Raises:
        MissingArtifactError: theta0 is missing, or no planned model is trained.
        ConsistencyError: a model did not start from the project's theta0 (see :func:`check_models`).
    """
    units = plan_task_vectors(layout, config, cancers=cancers, folds=folds)
    worker = TaskVectorWorker.prepare(layout, config, units, named=bool(folds))
    report = run_units(
        STAGE, units, worker, overwrite=overwrite, progress=progress, label="task vectors", unit_name="models"
    )
    return finish_report(layout, report)


__all__ = [
    "TaskVectorWorker",
    "check_models",
    "compute_task_vectors",
    "load_task_vector",
    "plan_task_vectors",
    "write_task_vector",
]
