"""The one training loop every learned model uses (cancer-specific ABMIL, STEPH, learned baselines).

Protocol (docs/train-source.md, "Protocol"): a seeded shuffle per epoch, batches of ``batch_size`` bags
with one SurvMLE over the batch (the leftover bags of an epoch are dropped), AdamW with decay on
>= 2-d weights, cosine schedule with linear warm-up stepped once per optimiser step, the last
state is kept. The next batch (across epoch boundaries too) is read in a background thread
while the current one computes; on CUDA that thread also copies it to the GPU on a side stream
and builds its padded chunks there (:mod:`~steph.training.staging`: no page-locked or padded
copies in host memory); on CPU the chunks are built by the training thread, so that no copy
competes with the compute's threads.

Execution (the cost of real patches only, under a patch budget per forward; automatic per
device, see :func:`~steph.training.batching.auto_patch_budget`). A model that accepts packed
bags (``packs_bags``: ABMIL and every built-in merge model) runs bags laid end to end, unpadded
(:func:`~steph.models.abmil.packed_bags`: the same operators whatever the number of bags, so a
GPU sees a few large matrix products per step, not a few per bag): on CUDA in packs of up to the
budget (usually the whole batch), on CPU in packs of up to
:data:`~steph.training.batching.CPU_PACK_PATCHES` real patches, models with one merged encoder
per bag (STEPH, AdaMerging with a hypernetwork) included: their grouped product runs bag by bag
on CPU, at the cost of bags alone where the arithmetic is large, while the rest of the pack
(the hypernetwork, the softmax and pooling, the loss) runs once for all its bags. Other models:
on CUDA bags of similar length share a padded forward (:func:`~steph.training.batching.plan_chunks`),
the others run alone, unpadded; on CPU every bag runs alone, without a mask
(:func:`~steph.training.batching.shares_forwards`). Each chunk is forwarded and back-propagated
on its own with its loss weighted by ``n_chunk / B``, so the gradient is exactly that of one SurvMLE
over the B bags (SurvMLE and the merge methods' ``aux_loss`` are means over bags, or constants
over the batch), while memory holds one chunk's activations. A bag longer than the budget is
pooled in patch chunks (:func:`~steph.models.abmil.patch_chunking`). Dropout masks are drawn
per chunk (same distribution, different draws from the whole-batch run).

A model's ``forward(x, mask)`` returns logits ``[B, T]`` or a :class:`ModelOutput` whose
``aux_loss`` is added to the survival loss (STEPH's regularisers). Every forward of ``fit`` knows
its bags' positions in the training data, so a model computes a frozen per-bag constant (ROUPKT's
expert embeddings) once per patient, not once per epoch (:mod:`~steph.training.memo`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Protocol, cast

import torch
from torch import Tensor, nn

from ..models.abmil import Segments, as_dtype, packed_bags, patch_chunking
from ..progress import NULL_PROGRESS, Progress
from ..runtime import seed_everything
from ..survival import LabelSpec, SurvivalTargets, SurvLabels, surv_mle_from_logits
from ..threads import intra_op_threads
from .batching import (
    CPU_PACK_PATCHES,
    Chunk,
    auto_patch_budget,
    chunk_input,
    chunk_share,
    chunks,
    epoch_batches,
    load_chunks,
    plan_batch,
    shares_forwards,
)
from .memo import active_memo, bag_keys, bag_memo, forward_bags
from .optim import AdamW, WarmupCosine, build_optimizer
from .precision import autocast, grad_scaler, resolve_precision
from .staging import DeviceStager, Staged, claimed_in_turn

if TYPE_CHECKING:
    from ..config.train import TrainConfig

log = logging.getLogger(__name__)


class BagSource(Protocol):
    """Anything that returns a patient's bag ``[K, D]`` (float32, CPU) by patient id. A source
    that also has ``get_many(ids) -> list[Tensor]`` (:class:`steph.data.BagStore`: streamed bags
    read by several threads) is asked for a batch's bags at once; one that also has ``dim`` and
    ``n_patches(id) -> int`` (BagStore: from the files' headers) lets training and prediction on
    CPU size their threads from the work (:func:`cpu_product_flops`)."""

    def get(self, patient_id: str) -> Tensor: ...


def get_bags(bags: BagSource, ids: Sequence[str]) -> list[Tensor]:
    """The bags of ``ids`` in order, through ``bags.get_many`` where the source has it."""
    get_many = getattr(bags, "get_many", None)
    return list(get_many(ids)) if get_many is not None else [bags.get(i) for i in ids]


@dataclass
class ModelOutput:
    logits: Tensor
    aux_loss: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


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
    """Patch budget of one forward: 0 = automatic per device, > 0 = this many padded patches,
    < 0 = the whole batch padded in one forward (the pre-chunking behaviour, for comparison)."""
    precision: str = "fp32"
    """auto, fp32, bf16 or fp16 (:mod:`steph.training.precision`)."""

    @classmethod
    def from_train(cls, train: TrainConfig) -> FitSettings:
        """The protocol of a project's ``train:`` section: every field is the ``train:`` field of
        the same name (``max_batch_patches``: ``train.max_bag_batch_patches``)."""
        renamed = {"max_batch_patches": "max_bag_batch_patches"}
        return cls(**{f.name: getattr(train, renamed.get(f.name, f.name)) for f in fields(cls)})


def as_output(out: Tensor | ModelOutput) -> ModelOutput:
    return out if isinstance(out, ModelOutput) else ModelOutput(out)


def patch_budget(max_batch_patches: int, device: torch.device, dim: int) -> int:
    """Resolved budget: the setting if non-zero, else :func:`auto_patch_budget`."""
    return max_batch_patches if max_batch_patches != 0 else auto_patch_budget(device, dim)


def _dim(bags: BagSource, data: SurvivalTargets) -> int:
    dim = getattr(bags, "dim", None)
    return int(dim) if dim is not None else int(bags.get(data.ids[0]).shape[1])


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
    steps_per_epoch = len(data) // settings.batch_size
    if steps_per_epoch == 0 and settings.epochs > 0:
        log.warning(
            "%s: %d training bags < batch size %d: no optimiser step will be taken",
            task,
            len(data),
            settings.batch_size,
        )
    optimizer, scheduler = optimiser(params, settings, steps_per_epoch)
    precision = resolve_precision(settings.precision, device)
    scaler = grad_scaler(precision, device)
    budget = patch_budget(settings.max_batch_patches, device, _dim(bags, data)) if len(data) else -1
    log.info("%s: patch budget %d per forward, precision %s", task, budget, precision)
    losses: list[float] = []
    share, pack, stager = shares_forwards(device), packs(model), DeviceStager(device)
    limit, labels = pack_limit(device, budget), label_spec(model, settings)
    flops = cpu_product_flops(model, bags, data.ids, settings.batch_size, device)
    progress.start(task, settings.epochs * steps_per_epoch, unit="steps")
    # Every epoch's shuffle drawn up front (the same draws, in the same order, as epoch by
    # epoch), so the loader reads the next epoch's first batch during this epoch's last step.
    plan = [epoch_batches(len(data), settings.batch_size, generator) for _ in range(settings.epochs)]
    queue = [batch for batches in plan for batch in batches]
    # the bags' rows in an enclosing memo of these patients (kept for predictions), else fit's own
    outer = active_memo()
    found = outer.positions(data.ids) if outer is not None else None
    memo = contextlib.nullcontext(outer) if found is not None else bag_memo(len(data))
    positions = found if found is not None else list(range(len(data)))
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="bag-loader") as pool,
        memo,
        intra_op_threads(flops) as threads,
    ):
        if flops is not None:
            log.info("%s: %d intra-op threads for products of %.0f MFLOP", task, threads, flops / 1e6)

        jobs = [
            functools.partial(
                _load_batch,
                bags,
                data,
                batch,
                [positions[i] for i in batch],
                budget,
                stager,
                share,
                pack,
                limit,
                labels,
            )
            for batch in queue
        ]
        claimed = claimed_in_turn(stager, jobs, pool)
        for epoch, batches in enumerate(plan):
            model.train()
            # the losses are summed on the device and read once per epoch: no step waits for the GPU
            epoch_loss, n_steps = torch.zeros((), dtype=torch.float64, device=device), 0
            for _ in batches:
                parts = next(claimed)
                optimizer.zero_grad(set_to_none=True)
                batch_loss = backward_chunks(
                    model, parts, settings, device=device, budget=budget, precision=precision, scaler=scaler
                )
                # AdamW (optim.py) has the param_groups and step() that GradScaler uses; torch
                # annotates the argument as its own Optimizer, which would import TorchDynamo
                scaler.step(cast("torch.optim.Optimizer", optimizer))
                scaler.update()
                scheduler.step()
                epoch_loss.add_(batch_loss)
                n_steps += 1
                progress.advance(task, 1, epoch=epoch + 1)
            mean_loss = float(epoch_loss) / max(1, n_steps)
            losses.append(mean_loss)
            if on_epoch is not None:
                on_epoch(epoch + 1, mean_loss)
    progress.finish(task)
    return losses


def optimiser(
    params: Sequence[tuple[str, nn.Parameter]],
    settings: FitSettings,
    steps_per_epoch: int,
    *,
    stacked: bool = False,
) -> tuple[AdamW, WarmupCosine]:
    """The protocol's AdamW over ``params`` (``stacked``: as :func:`~steph.training.optim.build_optimizer`)
    and its cosine schedule with ``settings.warmup_epochs`` of linear warm-up, stepped once per
    optimiser step over ``settings.epochs`` epochs of ``steps_per_epoch`` steps."""
    optimizer = build_optimizer(params, lr=settings.lr, weight_decay=settings.weight_decay, stacked=stacked)
    scheduler = WarmupCosine(
        optimizer,
        warmup_steps=math.floor(settings.warmup_epochs * steps_per_epoch),
        total_steps=settings.epochs * steps_per_epoch,
    )
    return optimizer, scheduler


def packs(model: nn.Module) -> bool:
    """Whether batches for ``model`` run as packs of bags, on every device (see the module docstring)."""
    return bool(getattr(model, "packs_bags", False))


def pack_limit(device: torch.device, budget: int) -> int | None:
    """Patches per pack: the budget on CUDA, None (the CPU rule of
    :func:`~steph.training.batching.plan_batch`) elsewhere."""
    return budget if device.type == "cuda" and budget > 0 else None


def cpu_product_flops(
    model: nn.Module, bags: BagSource, ids: Sequence[str], batch_size: int, device: torch.device
) -> float | None:
    """FLOPs of the largest matrix product in a CPU forward over the bags of ``ids``, which size
    its intra-op threads (:func:`steph.threads.intra_op_threads`): the first layer's ``2 x rows x
    D x E``, with ``E`` the embedding (the head's input) and ``rows`` the patches one forward
    holds at the bags' mean size ``K``: ``max(K, min(batch_size x K, CPU_PACK_PATCHES))`` for a
    model that packs bags on CPU, else ``K``. None off CPU, or where the source does not know
    its bags' sizes (``n_patches``) and width (``dim``) or the model has no linear ``pred_head``."""
    sizes, dim, head = (
        getattr(bags, "n_patches", None),
        getattr(bags, "dim", None),
        getattr(model, "pred_head", None),
    )
    if device.type != "cpu" or not ids or sizes is None or dim is None or not isinstance(head, nn.Linear):
        return None
    mean = sum(int(sizes(i)) for i in ids) / len(ids)
    rows = max(mean, min(batch_size * mean, CPU_PACK_PATCHES)) if packs(model) else mean
    return 2.0 * rows * int(dim) * head.in_features


def _packing(seg: Segments | None) -> contextlib.AbstractContextManager[object]:
    return packed_bags(seg) if seg is not None else contextlib.nullcontext()


def backward_chunks(
    model: nn.Module,
    parts: Sequence[Chunk],
    settings: FitSettings,
    *,
    device: torch.device,
    budget: int = -1,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
) -> Tensor:
    """Accumulate the gradient of one batch's loss, chunk by chunk; returns the loss, a float64
    scalar on the device (``float()`` reads it; ``fit`` sums a whole epoch's before reading).

    loss = SurvMLE(B bags) + aux = sum_c (n_c / B) [SurvMLE(chunk c) + aux_c], exact when
    ``aux`` is a mean over bags or the same for every chunk (see the module docstring).

    The chunk losses are summed on the device (in float64, as a Python float sum would) and not
    read back: on CUDA a read-back, like a copy from pageable host memory, waits for the GPU, so
    one per chunk or per step would stall the kernel queue (staged chunks bring their labels to
    the device with them).
    """
    total = sum(int(p.bins.shape[0]) for p in parts)
    batch_loss = torch.zeros((), dtype=torch.float64, device=device)
    for x, mask, y, e, seg, keys, labels, _groups in parts:
        with autocast(precision, device), patch_chunking(max(budget, 0)), _packing(seg), forward_bags(keys):
            m = mask.to(device, non_blocking=True) if mask is not None else None
            out = as_output(model(x if x.device == device else x.to(device, non_blocking=True), m))
        logits = as_dtype(out.logits, torch.float32)
        share = chunk_share(len(y), total, len(parts))
        spec = LabelSpec(int(logits.shape[1]), settings.alpha, settings.eps)
        if labels is None or not _labels_fit(labels, spec, logits.device):  # staged without them
            labels = spec.labels(y.to(device), e.to(device), share)
        loss = surv_mle_from_logits(logits, labels)
        if out.aux_loss is not None:
            aux = as_dtype(out.aux_loss, torch.float32)
            loss = loss + (aux * share if len(parts) > 1 else aux)
        torch.autograd.backward(scaler.scale(loss) if scaler is not None else loss)
        with torch.no_grad():
            batch_loss.add_(loss)  # in float64, as loss.double() would be
    return batch_loss


def _labels_fit(labels: SurvLabels, spec: LabelSpec, device: torch.device) -> bool:
    same = (labels.time_bins, labels.alpha, labels.eps) == (spec.time_bins, spec.alpha, spec.eps)
    return same and labels.index.device == device


def label_spec(model: nn.Module, settings: FitSettings) -> LabelSpec | None:
    """The :class:`~steph.survival.LabelSpec` the loader builds each chunk's labels with, where the
    model's time bins can be read off it (its ``time_bins``, or its ``pred_head``'s width); None
    leaves them to the training step."""
    bins = getattr(model, "time_bins", None)
    head = getattr(model, "pred_head", None)
    if bins is None and isinstance(head, nn.Linear):
        bins = head.out_features
    return LabelSpec(int(bins), settings.alpha, settings.eps) if isinstance(bins, int) else None


def _load_batch(
    bags: BagSource,
    data: SurvivalTargets,
    batch: list[int],
    positions: Sequence[int],
    budget: int,
    stager: DeviceStager,
    share: bool = True,
    pack: bool = False,
    limit: int | None = None,
    labels: LabelSpec | None = None,
) -> Staged:
    """Read one batch's bags (``batch``: their indices in ``data``; ``positions``: their
    positions in the bag memo) and stage them (see :mod:`~steph.training.staging`); in the
    loader thread."""
    index = torch.tensor(batch, dtype=torch.long)
    bins, events = data.bins[index], data.events[index]
    loaded = get_bags(bags, [data.ids[i] for i in batch])

    def build(on_device: Sequence[Tensor]) -> list[Chunk]:
        where = on_device[0].device
        return load_chunks(
            on_device, bins.to(where), events.to(where), budget, share, pack, limit, positions, labels
        )

    return stager.stage(loaded, build)


@torch.no_grad()
def predict(
    model: nn.Module,
    ids: Sequence[str],
    bags: BagSource,
    *,
    device: torch.device,
    batch_size: int = 8,
    max_batch_patches: int = 0,
    precision: str = "fp32",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Hazards ``[N, T]`` (eval mode, no dropout) and any extras the model returns, in ``ids`` order.

    Each batch runs as :func:`fit` runs it (packs of bags for a model that packs; other models'
    chunks of :func:`~steph.training.batching.plan_chunks`, on CPU every bag alone) under the
    patch budget ``max_batch_patches`` (as :attr:`FitSettings.max_batch_patches`: 0 = automatic,
    < 0 = whole batch); results are unchanged. ``precision`` as ``train.precision``; hazards are fp32.
    Inside a :func:`~steph.training.memo.bag_memo` opened with patients' ids, the bags of those
    patients read their per-bag constants from it (ROUPKT's frozen experts, computed in training).
    """
    model.to(device)
    model.eval()
    hazards: list[Tensor] = []
    extras: dict[str, list[Tensor]] = {}
    if not ids:
        return torch.zeros(0, 0), {}
    budget = patch_budget(max_batch_patches, device, int(bags.get(ids[0]).shape[1]))
    precision = resolve_precision(precision, device)
    share, pack, limit = shares_forwards(device), packs(model), pack_limit(device, budget)
    memo = active_memo()
    with intra_op_threads(cpu_product_flops(model, bags, ids, batch_size, device)):
        for batch in chunks(range(len(ids)), batch_size):
            batch_ids = [ids[i] for i in batch]
            loaded = [bag.to(device) for bag in get_bags(bags, batch_ids)]
            where = memo.positions(batch_ids) if memo is not None else None
            parts = plan_batch(loaded, budget, share, pack, limit)
            order = torch.tensor([j for part in parts for j in part]).argsort()
            outs = []
            for part in parts:
                x, mask, seg = chunk_input(loaded, part, pack)
                keys = bag_keys([where[j] for j in part], device) if where is not None else None
                with (
                    autocast(precision, device),
                    patch_chunking(max(budget, 0)),
                    _packing(seg),
                    forward_bags(keys),
                ):
                    m = mask.to(device) if mask is not None else None
                    outs.append(as_output(model(x.to(device), m)))
            hazards.append(torch.sigmoid(torch.cat([o.logits.float() for o in outs])[order]).cpu())
            for key in outs[0].extras:
                value = torch.cat([o.extras[key].detach() for o in outs])[order]
                extras.setdefault(key, []).append(value.float().cpu())
    return torch.cat(hazards), {k: torch.cat(v) for k, v in extras.items()}
