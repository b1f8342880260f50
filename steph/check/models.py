"""Checks of what the stages made: theta0, the cancer-specific models and their task vectors.

Every model must start from the project's theta0 (its record's sha256), with the features' D
as input; every task vector must come from that theta0 and from the model now on disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import DataError, StephError
from ..records import ModelRecord, Record, TaskVectorRecord
from ..theta0 import Theta0, load_theta0
from .findings import CheckReport

R = TypeVar("R", bound=Record)

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

RETRAIN = "retrain from the project's theta0: `stephctl train-source --overwrite`, then `stephctl task-vector --overwrite`"


def check_theta0(
    layout: ProjectLayout, config: ProjectConfig, dim: int | None, report: CheckReport
) -> Theta0 | None:
    """theta0 matches its record, the model: section and the features' D (absent is fine)."""
    if not layout.theta0.is_file() and not layout.theta0_meta.is_file():
        report.passed("*", "theta0", "not created yet (`stephctl train-source` creates it)")
        return None
    try:
        theta0 = load_theta0(layout, model=config.model, dim_in=dim)
    except StephError as exc:
        report.error("*", "theta0", exc.message, exc.hint)
        return None
    report.passed(
        "*",
        "theta0",
        f"{layout.theta0.name} sha256 {theta0.sha256[:12]}..., D={theta0.architecture.get('dim_in')}",
    )
    return theta0


def _read(path: Any, kind: type[R], report: CheckReport, cancer: str, check: str) -> R | None:
    try:
        return kind.read(path)
    except OSError as exc:
        report.error(cancer, check, f"{path} cannot be read: {exc}", hint=RETRAIN)
    except DataError as exc:
        report.error(cancer, check, str(exc), hint=RETRAIN)
    return None


def check_models(
    layout: ProjectLayout, config: ProjectConfig, cancer: str, theta0: Theta0 | None, report: CheckReport
) -> None:
    """Models and task vectors of ``cancer`` agree with theta0, the encoder and each other."""
    folds = layout.model_folds(cancer)
    vector_folds = [k for k in range(100) if layout.task_vector_meta(cancer, k).is_file()]
    if not folds and not vector_folds:
        return
    problems = 0
    model_sha: dict[int, str] = {}
    for fold in folds:
        meta_path = layout.model_meta(cancer, fold)
        if not meta_path.is_file():
            continue  # unfinished unit: `stephctl status` reports it
        meta = _read(meta_path, ModelRecord, report, cancer, "models")
        if meta is None:
            problems += 1
            continue
        model_sha[fold] = str(meta.model_sha256)
        if theta0 is None:
            problems += 1
            report.error(
                cancer,
                "models",
                f"{meta_path}: a model exists but the project has no usable theta0",
                hint=RETRAIN,
            )
        elif meta.theta0_sha256 != theta0.sha256:
            problems += 1
            report.error(
                cancer,
                "models",
                f"{meta_path}: trained from theta0 {str(meta.theta0_sha256)[:12]}..., "
                f"the project's is {theta0.sha256[:12]}...",
                hint=RETRAIN,
            )
        encoder = meta.encoder
        if encoder is not None and encoder != config.encoder:
            problems += 1
            report.error(
                cancer,
                "models",
                f"{meta_path}: trained on {encoder} features, the project uses {config.encoder}",
                hint=RETRAIN,
            )
    for fold in vector_folds:
        meta_path = layout.task_vector_meta(cancer, fold)
        record = _read(meta_path, TaskVectorRecord, report, cancer, "task vectors")
        if record is None:
            problems += 1
            continue
        if theta0 is not None and record.theta0_sha256 != theta0.sha256:
            problems += 1
            report.error(
                cancer,
                "task vectors",
                f"{meta_path}: made from theta0 {str(record.theta0_sha256)[:12]}..., "
                f"the project's is {theta0.sha256[:12]}...",
                hint=RETRAIN,
            )
        recorded = record.source_model_sha256
        if fold in model_sha and recorded is not None and recorded != model_sha[fold]:
            problems += 1
            report.error(
                cancer,
                "task vectors",
                f"{meta_path}: made from an older model of fold {fold} (sha256 {str(recorded)[:12]}..., "
                f"now {model_sha[fold][:12]}...)",
                hint=f"`stephctl task-vector --cancer {cancer} --fold {fold} --overwrite`",
            )
    if not problems:
        report.passed(
            cancer,
            "models",
            f"{len(folds)} model(s), {len(vector_folds)} task vector(s) from theta0",
        )
