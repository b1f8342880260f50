"""Several training units in one optimiser step: a target's folds of one merge method together.

A unit of the paper's protocol (one target fold of one method) is small: a step over its 16
bags is a few hundred operators, and on a GPU it costs what the host takes to dispatch them,
whatever the arithmetic (docs/benchmarks.md, "Host overhead"). :func:`fit_stacked` trains U
units with the operators of one step: a *stacked* model holds every unit's parameters along a
leading dimension (``[U, ...]``), each step packs the U units' batches end to end, unit after
unit, and each unit's bags go through that unit's parameters (one grouped product over the
units per layer, :func:`~steph.models.abmil.weight_groups`). The loss is the sum of the units'
losses, so each unit's gradient is the one it gets alone; AdamW is elementwise, so each unit's
update is too.

Each unit's result is its own :func:`~steph.training.loop.fit` run's, to float rounding
(``tests/training/test_stacked.py``), dropout included:

- each unit shuffles its training split with its own generator, seeded with the seed, as
  ``fit`` does;
- each unit draws its dropout masks from its own stream, started from the state ``fit`` starts
  from (:class:`~steph.models.dropout.UnitStreams`), over its rows in the order ``fit`` packs
  them (length-sorted);
- SurvMLE is each unit's mean over its own bags, the merge methods' regularisers each unit's own;
- per-bag constants (ROUPKT's frozen experts) are each unit's, in its own part of one memo.

That holds under the conditions :func:`stack_refusal` checks: the units take the same number of
steps per epoch (one learning-rate schedule, one step count), each unit's batch would run as one
pack alone and the whole step fits the patch budget, and the precision is fp32 or bf16 (fp16's
loss scaling skips every unit's step when one unit's gradient overflows); and while every
unit's loss stays finite (:class:`UnitsDiverged`).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..models.abmil import as_dtype, packed_bags, patch_chunking, segments, weight_groups
from ..models.dropout import UnitStreams, unit_streams
from ..progress import NULL_PROGRESS, Progress
from ..runtime import seed_everything
from ..survival import LabelSpec, SurvivalTargets, surv_mle_by_unit
from ..threads import intra_op_threads
from .batching import CPU_PACK_PATCHES, Chunk, epoch_batches, plan_packs
from .loop import BagSource, FitSettings, as_output, get_bags, label_spec, optimiser, pack_limit, patch_budget
from .memo import BagMemo, bag_keys, bag_memo, forward_bags
from .precision import autocast, resolve_precision
from .staging import DeviceStager, Staged, claimed_in_turn

if TYPE_CHECKING:
    from collections.abc import Callable


class UnitsDiverged(Exception):
    """A unit's training loss became NaN or infinite (``units``: their indices, ``epoch``: the
    first epoch it was seen in). In a stacked step it does not stay that unit's: the packed
    softmax and pooling multiply the other units' zeros by it (0 x inf = NaN, forward and
    backward), so the caller trains the units one by one instead, each then as its own run goes."""

    def __init__(self, units: list[int], epoch: int) -> None:
        super().__init__(f"the training loss of unit(s) {units} became non-finite in epoch {epoch}")
        self.units, self.epoch = units, epoch


def _unit_limit(device: torch.device, budget: int) -> int:
    """Patches a unit's pack holds in its own ``fit`` run (:func:`~steph.training.batching.plan_batch`)."""
    limit = pack_limit(device, budget)
    return limit if limit is not None else min(budget, CPU_PACK_PATCHES)


def _largest_batch(sizes: Sequence[int], batch_size: int) -> int:
    """The most patches ``batch_size`` of the bags of ``sizes`` can hold."""
    return sum(sorted(sizes, reverse=True)[:batch_size])


def stack_refusal(
    units: Sequence[SurvivalTargets], bags: BagSource, settings: FitSettings, device: torch.device
) -> str | None:
    """Why ``units`` cannot train together in :func:`fit_stacked` with each unit's own result,
    or None where they can (see the module docstring)."""
    if not units:
        return "no units"
    steps = {len(u) // settings.batch_size for u in units}
    if len(steps) > 1:
        return f"the units take different numbers of steps per epoch ({sorted(steps)})"
    if steps == {0}:
        return "no unit has a whole batch"
    if device.type == "cuda" and resolve_precision(settings.precision, device) == "fp16":
        return "fp16 training scales the loss of all units at once"
    sizes_of, dim = getattr(bags, "n_patches", None), getattr(bags, "dim", None)
    if sizes_of is None or dim is None:
        return "the bags' sizes are not known before they are read"
    budget = patch_budget(settings.max_batch_patches, device, int(dim))
    if budget <= 0:
        return "a batch runs whole and padded (train.max_bag_batch_patches < 0)"
    limit, total = _unit_limit(device, budget), 0
    for u in units:
        largest = _largest_batch([int(sizes_of(i)) for i in u.ids], settings.batch_size)
        if largest > limit:
            return f"a batch of up to {largest} patches runs in several packs (at most {limit} in one)"
        total += largest
    if total > budget:
        return f"the units' batches together hold up to {total} patches, over the budget of {budget}"
    return None


def fit_stacked(
    model: nn.Module,
    units: Sequence[SurvivalTargets],
    bags: BagSource,
    settings: FitSettings,
    *,
    device: torch.device,
    progress: Progress = NULL_PROGRESS,
    task: str = "training",
    memos: list[BagMemo] | None = None,
) -> list[list[float]]:
    """Train the stacked ``model`` (``model.units`` units, their parameters along the first
    dimension) on each unit's training split of ``units``, in place; returns each unit's mean
    training loss of each epoch (``[unit][epoch]``, as :func:`~steph.training.loop.fit`).

    ``model(x, None)`` takes a pack of the units' bags, unit after unit, inside
    :func:`~steph.models.abmil.packed_bags` and :func:`~steph.models.abmil.weight_groups`, and
    returns ``[U * batch_size, T]`` logits or a :class:`~steph.training.loop.ModelOutput` whose
    ``aux_loss`` is the sum of the units' and whose ``extras["unit_aux"]`` holds each unit's.

    Per-bag constants (ROUPKT's frozen experts, :mod:`~steph.training.memo`) are computed once
    per bag of each unit, in one memo over every unit's bags; ``memos``, where given, receives
    each unit's part of it, over the unit's patients (:meth:`~steph.training.memo.BagMemo.part`),
    for its predictions (:func:`~steph.training.memo.using_memo`).

    Raises:
        ValueError: the units cannot train together (:func:`stack_refusal`), or ``model``
            holds another number of units.
        UnitsDiverged: a unit's epoch loss is NaN or infinite (the units' models are untouched:
            train them one by one).
    """
    refusal = stack_refusal(units, bags, settings, device)
    if refusal is not None:
        raise ValueError(f"{task}: the units cannot train in one step: {refusal}")
    count = len(units)
    if int(getattr(model, "units", -1)) != count:
        raise ValueError(f"{task}: a model of {getattr(model, 'units', '?')} units for {count} units")
    seed_everything(settings.seed)
    model.to(device)
    streams = UnitStreams(count, device)  # every unit's dropout starts where its own fit's does
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    steps = len(units[0]) // settings.batch_size
    optimizer, scheduler = optimiser(params, settings, steps, stacked=True)
    precision = resolve_precision(settings.precision, device)
    dim = int(getattr(bags, "dim", 0))  # checked by stack_refusal
    budget = patch_budget(settings.max_batch_patches, device, dim)
    spec = label_spec(model, settings)
    if spec is None:
        raise ValueError(f"{task}: the stacked model does not say its time bins (``time_bins``)")
    plans = []
    for unit in units:
        generator = torch.Generator().manual_seed(settings.seed)
        plans.append(
            [epoch_batches(len(unit), settings.batch_size, generator) for _ in range(settings.epochs)]
        )
    queue = [
        [plans[u][epoch][step] for u in range(count)]
        for epoch in range(settings.epochs)
        for step in range(steps)
    ]
    stager, limit = DeviceStager(device), _unit_limit(device, budget)
    losses: list[list[float]] = [[] for _ in range(count)]
    offsets = [0, *itertools.accumulate(len(u) for u in units)]
    progress.start(task, settings.epochs * steps, unit="steps")
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="bag-loader") as pool,
        intra_op_threads(_product_flops(model, bags, units, settings.batch_size, device)),
        bag_memo(offsets[-1]) as memo,
    ):
        jobs = [functools.partial(load_step, bags, units, batches, stager, spec, limit) for batches in queue]
        claimed = claimed_in_turn(stager, jobs, pool)
        for _epoch in range(settings.epochs):
            model.train()
            epoch_loss = torch.zeros(count, dtype=torch.float64, device=device)
            for _ in range(steps):
                (part,) = next(claimed)
                optimizer.zero_grad(set_to_none=True)
                epoch_loss.add_(backward_step(model, part, count, streams, precision, budget, device))
                optimizer.step()
                scheduler.step()
                progress.advance(task, 1, epoch=_epoch + 1)
            values = (epoch_loss / max(1, steps)).tolist()
            broken = [u for u, value in enumerate(values) if not math.isfinite(value)]
            if broken:  # read once an epoch anyway: no step waits for the device
                raise UnitsDiverged(broken, _epoch + 1)
            for u, value in enumerate(values):
                losses[u].append(value)
        if memos is not None:
            memos.extend(memo.part(offsets[u], len(unit), unit.ids) for u, unit in enumerate(units))
    progress.finish(task)
    return losses


def backward_step(
    model: nn.Module,
    part: Chunk,
    count: int,
    streams: UnitStreams,
    precision: str,
    budget: int,
    device: torch.device,
) -> Tensor:
    """One step's forward and backward; returns each unit's loss ``[U]`` (float32, detached)."""
    assert part.segments is not None and part.groups is not None and part.labels is not None
    with (
        autocast(precision, device),
        patch_chunking(max(budget, 0)),
        packed_bags(part.segments),
        weight_groups(part.groups),
        unit_streams(streams, part.groups.sizes),
        forward_bags(part.keys),
    ):
        out = as_output(model(part.x, None))
    loss, per_unit = surv_mle_by_unit(as_dtype(out.logits, torch.float32), part.labels, count)
    if out.aux_loss is not None:
        loss = loss + as_dtype(out.aux_loss, torch.float32)
        unit_aux = out.extras.get("unit_aux")
        if unit_aux is None:
            raise ValueError("a stacked model with an aux_loss returns each unit's in extras['unit_aux']")
        per_unit = per_unit + as_dtype(unit_aux, torch.float32)
    torch.autograd.backward(loss)
    return per_unit


def load_step(
    bags: BagSource,
    units: Sequence[SurvivalTargets],
    batches: Sequence[list[int]],
    stager: DeviceStager,
    spec: LabelSpec,
    limit: int,
) -> Staged:
    """Read one step's bags (each unit's batch) and stage their pack: each unit's bags in the
    order of its own ``fit`` pack (length-sorted), unit after unit, with their positions in the
    memo over every unit's bags (unit after unit); in the loader thread."""
    ids, bins, events, counts, positions = [], [], [], [], []
    offset = 0
    for unit, batch in zip(units, batches, strict=True):
        ids += [unit.ids[i] for i in batch]
        positions += [offset + i for i in batch]
        offset += len(unit)
        index = torch.tensor(batch, dtype=torch.long)
        bins.append(unit.bins[index])
        events.append(unit.events[index])
        counts.append(len(batch))
    loaded = get_bags(bags, ids)
    y, e = torch.cat(bins), torch.cat(events)

    def build(on_device: Sequence[Tensor]) -> list[Chunk]:
        where = on_device[0].device
        order: list[int] = []
        rows: list[int] = []
        start = 0
        for n in counts:
            lengths = [int(b.shape[0]) for b in on_device[start : start + n]]
            (pack,) = plan_packs(lengths, limit)  # one pack: stack_refusal checked the sizes
            order += [start + j for j in pack]
            rows.append(sum(lengths))
            start += n
        chosen = [on_device[j] for j in order]
        x = torch.cat(chosen).unsqueeze(0)
        index = torch.tensor(order, dtype=torch.long)
        yb, eb = y[index].to(where), e[index].to(where)
        labels = spec.labels(yb, eb, float(len(counts)))  # each unit's mean over its own bags
        seg = segments([int(b.shape[0]) for b in chosen], where)
        keys = bag_keys([positions[j] for j in order], where)
        return [Chunk(x, None, yb, eb, seg, keys, labels, segments(rows, where))]

    make: Callable[[Sequence[Tensor]], list[Chunk]] = build
    return stager.stage(loaded, make)


def _product_flops(
    model: nn.Module,
    bags: BagSource,
    units: Sequence[SurvivalTargets],
    batch_size: int,
    device: torch.device,
) -> float | None:
    """FLOPs of the first layer's product over one step's pack, ``2 x rows x D x E`` at the
    bags' mean size (as :func:`~steph.training.loop.cpu_product_flops` for one unit), which
    size the intra-op threads on CPU; None elsewhere or where the sizes or ``dim_emb`` are unknown."""
    sizes, dim, emb = (
        getattr(bags, "n_patches", None),
        getattr(bags, "dim", None),
        getattr(model, "dim_emb", None),
    )
    ids = [i for u in units for i in u.ids]
    if device.type != "cpu" or not ids or sizes is None or dim is None or emb is None:
        return None
    mean = sum(int(sizes(i)) for i in ids) / len(ids)
    return 2.0 * mean * batch_size * len(units) * int(dim) * int(emb)
