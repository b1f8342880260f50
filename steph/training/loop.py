"""The one training loop every learned model uses (cancer-specific ABMIL, STEPH, learned baselines).

Protocol (STEPH_SPEC section 3.1): a seeded shuffle per epoch, batches of ``batch_size`` bags
with one SurvMLE over the batch (the leftover bags of an epoch are dropped), AdamW with decay on
>= 2-d weights, cosine schedule with linear warm-up stepped once per optimiser step, the last
state is kept. Bags are padded and masked into real batches; the next batch is read and padded
in a background thread while the current one computes.

A model's ``forward(x, mask)`` returns logits ``[B, T]`` or a :class:`ModelOutput` whose
``aux_loss`` is added to the survival loss (STEPH's regularisers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

from ..progress import NULL_PROGRESS, Progress
from ..runtime import seed_everything
from ..survival import surv_mle_loss
from .batching import chunks, epoch_batches, pad_bags, size_chunks
from .optim import build_optimizer, cosine_with_warmup

log = logging.getLogger(__name__)


class BagSource(Protocol):
    """Anything that returns a patient's bag ``[K, D]`` (float32, CPU) by patient id."""

    def get(self, patient_id: str) -> Tensor: ...


@dataclass
class ModelOutput:
    logits: Tensor
    aux_loss: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class SurvivalTargets:
    """Patients to train on: ids with their time (days), event and time bin."""

    ids: list[str]
    times: Tensor
    events: Tensor
    bins: Tensor

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, kw_only=True)
class FitSettings:
    epochs: int
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_epochs: float = 1.0
    alpha: float = 0.5
    eps: float = 1e-7
    seed: int = 42
    max_batch_patches: int = 0
    """If > 0, a batch whose padded size (bags x longest bag) exceeds this is run as several
    length-sorted chunks, each forwarded and back-propagated on its own; the gradient is the
    same as one pass because SurvMLE (and a per-bag-mean ``aux_loss``) is a mean over bags."""


def _as_output(out: Tensor | ModelOutput) -> ModelOutput:
    return out if isinstance(out, ModelOutput) else ModelOutput(out)


def fit(
    model: nn.Module,
    data: SurvivalTargets,
    bags: BagSource,
    settings: FitSettings,
    *,
    device: torch.device,
    named_params: Sequence[tuple[str, nn.Parameter]] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    progress: Progress = NULL_PROGRESS,
    task: str = "training",
) -> list[float]:
    """Train ``model`` in place; returns the mean training loss of each epoch."""
    seed_everything(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model.to(device)
    params = list(named_params) if named_params is not None else list(model.named_parameters())
    optimizer = build_optimizer(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = len(data) // settings.batch_size
    if steps_per_epoch == 0 and settings.epochs > 0:
        log.warning(
            "%s: %d training bags < batch size %d: no optimiser step will be taken",
            task,
            len(data),
            settings.batch_size,
        )
    scheduler = cosine_with_warmup(
        optimizer,
        warmup_steps=math.floor(settings.warmup_epochs * steps_per_epoch),
        total_steps=settings.epochs * steps_per_epoch,
    )
    losses: list[float] = []
    cap = settings.max_batch_patches
    pin = device.type == "cuda"
    progress.start(task, settings.epochs * steps_per_epoch, unit="steps")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bag-loader") as pool:
        for epoch in range(settings.epochs):
            model.train()
            batches = epoch_batches(len(data), settings.batch_size, generator)
            epoch_loss, n_steps = 0.0, 0
            pending = pool.submit(_load_batch, bags, data, batches[0], cap, pin) if batches else None
            for i, _batch in enumerate(batches):
                assert pending is not None
                parts = pending.result()
                pending = (
                    pool.submit(_load_batch, bags, data, batches[i + 1], cap, pin)
                    if i + 1 < len(batches)
                    else None
                )
                optimizer.zero_grad(set_to_none=True)
                batch_loss = 0.0
                for x, mask, y, e in parts:
                    out = _as_output(
                        model(x.to(device, non_blocking=True), mask.to(device, non_blocking=True))
                    )
                    hazards = torch.sigmoid(out.logits)
                    loss = surv_mle_loss(
                        hazards, y.to(device), e.to(device), alpha=settings.alpha, eps=settings.eps
                    )
                    if out.aux_loss is not None:
                        loss = loss + out.aux_loss
                    if len(parts) > 1:
                        loss = loss * (len(y) / len(_batch))
                    loss.backward()
                    batch_loss += float(loss.detach())
                optimizer.step()
                scheduler.step()
                epoch_loss += batch_loss
                n_steps += 1
                progress.advance(task, 1, epoch=epoch + 1)
            mean_loss = epoch_loss / max(1, n_steps)
            losses.append(mean_loss)
            if on_epoch is not None:
                on_epoch(epoch + 1, mean_loss)
    progress.finish(task)
    return losses


def _load_batch(
    bags: BagSource, data: SurvivalTargets, batch: list[int], max_patches: int = 0, pin: bool = False
) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """The batch as padded ``(x, mask, bins, events)`` chunks (one chunk unless ``max_patches``);
    ``pin`` puts them in page-locked memory so the copy to the GPU is asynchronous."""
    loaded = [bags.get(data.ids[i]) for i in batch]
    parts = []
    for chunk in size_chunks([int(b.shape[0]) for b in loaded], max_patches):
        x, mask = pad_bags([loaded[j] for j in chunk])
        if pin:
            x, mask = x.pin_memory(), mask.pin_memory()
        index = torch.tensor([batch[j] for j in chunk], dtype=torch.long)
        parts.append((x, mask, data.bins[index], data.events[index]))
    return parts


@torch.no_grad()
def predict(
    model: nn.Module,
    ids: Sequence[str],
    bags: BagSource,
    *,
    device: torch.device,
    batch_size: int = 8,
    max_batch_patches: int = 0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Hazards ``[N, T]`` (eval mode, no dropout) and any extras the model returns, in ``ids`` order.

    ``max_batch_patches`` > 0 splits each batch into length-sorted chunks of at most that many
    padded patches (see :func:`~steph.training.batching.size_chunks`); results are unchanged.
    """
    model.to(device)
    model.eval()
    hazards: list[Tensor] = []
    extras: dict[str, list[Tensor]] = {}
    for batch in chunks(range(len(ids)), batch_size):
        loaded = [bags.get(ids[i]) for i in batch]
        parts = size_chunks([int(b.shape[0]) for b in loaded], max_batch_patches)
        order = torch.tensor([j for part in parts for j in part]).argsort()
        outs = []
        for part in parts:
            x, mask = pad_bags([loaded[j] for j in part])
            outs.append(_as_output(model(x.to(device), mask.to(device))))
        hazards.append(torch.sigmoid(torch.cat([o.logits for o in outs])[order]).float().cpu())
        for key in outs[0].extras:
            value = torch.cat([o.extras[key].detach() for o in outs])[order]
            extras.setdefault(key, []).append(value.float().cpu())
    if not hazards:
        return torch.zeros(0, 0), {}
    return torch.cat(hazards), {k: torch.cat(v) for k, v in extras.items()}
