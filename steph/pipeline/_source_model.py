"""Training one cancer-specific model and writing every output of a (cancer, fold) unit.

Outputs, in this order (meta.json last, so its presence marks a complete unit):
``model.safetensors``, ``config.yaml``, ``results/<CANCER>/cancer-specific/fold_<k>/``
(``predictions.csv`` + ``metrics.json``), the model's ``metrics.json`` (the same metrics plus the
per-epoch history) and ``meta.json``. ``train.log`` holds the per-epoch train loss; the test
C-index is computed at the end (the last history entry) and, with ``train.eval_every = N``, also
every N epochs during training (logged only, never used to select a model).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..checkpoints import save_state_dict
from ..config import dump_yaml, to_plain
from ..errors import DataError
from ..fileio import write_text
from ..layout import CANCER_SPECIFIC
from ..logs import run_log
from ..metrics.harrell import harrell_c
from ..models.abmil import architecture_of, create_abmil
from ..predictions import format_c, write_predictions
from ..progress import NULL_PROGRESS, Progress
from ..records import MetricsRecord, ModelRecord
from ..survival import SurvivalTargets, risk_score
from ..theta0 import Theta0, versions
from ..training.loop import FitSettings, fit, predict

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..data import BagStore, Cohort, Split
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnitContext:
    """Everything one (cancer, fold) unit needs."""

    layout: ProjectLayout
    config: ProjectConfig
    cohort: Cohort
    split: Split
    bags: BagStore
    theta0: Theta0
    device: torch.device

    @property
    def cancer(self) -> str:
        return self.cohort.cancer

    @property
    def fold(self) -> int:
        return self.split.fold


def fit_settings(config: ProjectConfig) -> FitSettings:
    """The reference protocol from the ``train:`` section: every :class:`FitSettings` field is
    the ``train:`` field of the same name (``max_batch_patches``: ``train.max_bag_batch_patches``)."""
    return FitSettings.from_train(config.train)


def _c_index(model: nn.Module, targets: SurvivalTargets, ctx: UnitContext) -> float | None:
    t = ctx.config.train
    hazards, _ = predict(
        model,
        targets.ids,
        ctx.bags,
        device=ctx.device,
        max_batch_patches=t.max_bag_batch_patches,
        precision=t.precision,
    )
    conc = harrell_c(targets.times.numpy(), targets.events.numpy(), risk_score(hazards.double()).numpy())
    return conc.value if conc.defined else None


def train_unit(ctx: UnitContext, *, progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Train the (cancer, fold) model from theta0 and write its outputs; returns its metrics."""
    layout, config = ctx.layout, ctx.config
    prepare_outputs(layout, ctx.cancer, ctx.fold)
    with run_log(layout.model_log(ctx.cancer, ctx.fold)):
        model = create_abmil(ctx.bags.dim, config.model)
        model.load_state_dict(ctx.theta0.state)
        train = ctx.cohort.targets(ctx.split.train, config.model)
        test = ctx.cohort.targets(ctx.split.test, config.model)
        settings = fit_settings(config)
        log.info(
            "%s fold %d: %d train / %d test patients, D=%d, %d epochs of %d steps, device %s, theta0 %s",
            ctx.cancer,
            ctx.fold,
            len(train),
            len(test),
            ctx.bags.dim,
            settings.epochs,
            len(train) // settings.batch_size,
            ctx.device,
            ctx.theta0.sha256[:12],
        )
        history: list[dict[str, Any]] = []

        def on_epoch(epoch: int, loss: float) -> None:
            if not math.isfinite(loss):
                raise DataError(
                    f"{ctx.cancer} fold {ctx.fold}: the training loss became {loss} in epoch {epoch}",
                    hint="lower train.lr, or check the features for extreme values",
                )
            every = config.train.eval_every
            if every and epoch % every == 0 and epoch < settings.epochs:
                c_index = _c_index(model, test, ctx)
                log.info(
                    "epoch %d/%d train_loss %.6f test_c_index %s",
                    epoch,
                    settings.epochs,
                    loss,
                    format_c(c_index),
                )
            else:  # the last epoch's C-index comes from the final predictions (write_outputs)
                c_index = None
                log.info("epoch %d/%d train_loss %.6f", epoch, settings.epochs, loss)
            history.append({"epoch": epoch, "train_loss": loss, "test_c_index": c_index})

        fit(
            model,
            train,
            ctx.bags,
            settings,
            device=ctx.device,
            on_epoch=on_epoch,
            progress=progress,
            task=f"{ctx.cancer} fold {ctx.fold}",
        )
        written = write_outputs(ctx, model, train, test, {"history": history})
        if history:
            log.info(
                "epoch %d/%d test_c_index %s (final)",
                settings.epochs,
                settings.epochs,
                format_c(written.metrics["c_index"]),
            )
        write_meta(
            ctx, written, {"epochs": settings.epochs, "steps_per_epoch": len(train) // settings.batch_size}
        )
        log.info("%s fold %d: test C-index %s", ctx.cancer, ctx.fold, format_c(written.metrics["c_index"]))
    return written.metrics


def prepare_outputs(layout: ProjectLayout, cancer: str, fold: int) -> None:
    """Mark a unit as not done (meta.json first) and start a fresh train.log."""
    layout.model_meta(cancer, fold).unlink(missing_ok=True)
    layout.model_log(cancer, fold).unlink(missing_ok=True)


@dataclass(frozen=True)
class Written:
    """What :func:`write_outputs` wrote: the metrics and the weights' sha256 and architecture."""

    metrics: dict[str, Any]
    weights_sha256: str
    architecture: dict[str, int]


def write_outputs(
    ctx: UnitContext, model: nn.Module, train: SurvivalTargets, test: SurvivalTargets, extra: dict[str, Any]
) -> Written:
    """Weights, resolved config, test predictions and metrics (everything but meta.json)."""
    layout, cancer, fold = ctx.layout, ctx.cancer, ctx.fold
    t = ctx.config.train
    cap, precision = t.max_bag_batch_patches, t.precision
    test_hazards, _ = predict(
        model, test.ids, ctx.bags, device=ctx.device, max_batch_patches=cap, precision=precision
    )
    train_hazards, _ = predict(
        model, train.ids, ctx.bags, device=ctx.device, max_batch_patches=cap, precision=precision
    )
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ctx_meta = {"cancer": cancer, "fold": fold, "theta0_sha256": ctx.theta0.sha256}
    weights_sha = save_state_dict(layout.model_weights(cancer, fold), state, ctx_meta)
    write_text(layout.model_config(cancer, fold), dump_yaml(ctx.config))
    metrics = write_predictions(
        layout.predictions(cancer, CANCER_SPECIFIC, fold),
        layout.result_metrics(cancer, CANCER_SPECIFIC, fold),
        ids=test.ids,
        times=test.times,
        events=test.events,
        hazards=test_hazards,
        train_hazards=train_hazards,
    )
    if metrics["c_index"] is None:
        log.warning(
            "%s fold %d: C-index undefined (%s)", cancer, fold, metrics.get("c_index_undefined_reason")
        )
    history = extra.get("history")
    if history:  # the last epoch's test C-index is the final one
        history[-1]["test_c_index"] = metrics["c_index"]
    path = layout.model_metrics(cancer, fold)
    MetricsRecord.from_json({**metrics, **extra}, str(path)).write(path)
    return Written(metrics, weights_sha, architecture_of(state))


def write_meta(ctx: UnitContext, written: Written, extra: dict[str, Any]) -> Path:
    """meta.json, written last: provenance of the (cancer, fold) model."""
    record = ModelRecord(
        cancer=ctx.cancer,
        fold=ctx.fold,
        n_train=len(ctx.split.train),
        n_test=len(ctx.split.test),
        encoder=ctx.config.encoder,
        architecture=written.architecture,
        theta0_sha256=ctx.theta0.sha256,
        model_sha256=written.weights_sha256,
        seed=ctx.config.train.seed,
        device=str(ctx.device),
        versions=versions(),
        extra=extra,  # epochs, steps_per_epoch; imported_from, source_sha256 for imported models
        config=to_plain(ctx.config),
    )
    return record.write(ctx.layout.model_meta(ctx.cancer, ctx.fold))
