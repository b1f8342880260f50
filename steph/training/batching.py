"""A batch of patient bags of different lengths as the inputs of its forwards: packs of bags laid
end to end (:class:`~steph.models.abmil.Segments`), length-sorted chunks under a patch budget
(padded with a mask where bags share a forward), or bags alone (see :mod:`steph.training.loop`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ..models.abmil import Segments, segments
from ..survival import LabelSpec, SurvLabels
from .memo import BagKeys, bag_keys


def pad_bags(bags: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack bags ``[K_i, D]`` into ``x [B, K_max, D]`` (zeros) and ``mask [B, K_max]`` (True = real),
    on the bags' device (move the bags first to pad elsewhere)."""
    if not bags:
        raise ValueError("pad_bags needs at least one bag")
    k_max = max(int(b.shape[0]) for b in bags)
    dim = int(bags[0].shape[1])
    x = torch.zeros(len(bags), k_max, dim, dtype=bags[0].dtype, device=bags[0].device)
    mask = torch.zeros(len(bags), k_max, dtype=torch.bool, device=bags[0].device)
    for i, bag in enumerate(bags):
        x[i, : bag.shape[0]] = bag
        mask[i, : bag.shape[0]] = True
    return x, mask


def epoch_batches(
    n: int, batch_size: int, generator: torch.Generator, *, drop_last: bool = True
) -> list[list[int]]:
    """A seeded shuffle of ``range(n)`` cut into batches (the reference drops the leftover)."""
    order = torch.randperm(n, generator=generator).tolist()
    stop = (n // batch_size) * batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def chunks(indices: Sequence[int], size: int) -> Iterator[list[int]]:
    """Consecutive chunks (evaluation batches, no shuffling, nothing dropped)."""
    for start in range(0, len(indices), size):
        yield list(indices[start : start + size])


def size_chunks(lengths: Sequence[int], max_patches: int) -> list[list[int]]:
    """Positions of a batch grouped so that each padded chunk holds at most ``max_patches``.

    ``max_patches <= 0`` keeps the batch whole (``[[0, 1, ..., B - 1]]``). Otherwise bags are
    sorted by length and cut greedily: a chunk grows while ``len(chunk) * longest <= max_patches``;
    a single bag longer than the cap is a chunk of its own.

    >>> size_chunks([5, 1, 3, 2], 6)
    [[1, 3], [2], [0]]
    """
    if max_patches <= 0:
        return [list(range(len(lengths)))]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    result: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1) * lengths[i] > max_patches:
            result.append(current)
            current = []
        current.append(i)
    if current:
        result.append(current)
    return result


CPU_PATCH_BUDGET = 16_384
"""Automatic patch budget on CPU: the longest bag pooled in one pass (longer ones are pooled in
patch chunks under checkpointing, which recomputes their forward). It bounds the activations
of one forward (about 13 KB per patch at D = 1536, 512/384; 25 KB at the allocator's peak)."""
CPU_PACK_PATCHES = 2_048
"""On CPU, bags of a model that packs (``packs_bags``) share a forward while their real patches
sum to at most this many (:func:`plan_packs`): one projection over the small bags together, no
padding; a longer bag runs alone, as a view of the cached tensor. Measured on heavy-tailed bags
at D = 1536 (``benchmarks/bench_train.py``, docs/benchmarks.md): the same CPU time as 8,192
within the machine's noise, and a peak RSS of 1.49 GB against 1.66 GB (a pack is a copy). The
training thread builds a batch's packs when it takes the batch (:mod:`~steph.training.staging`)."""
PADDING_SLACK = 0.10
"""Bags share a padded forward only while padding adds at most this fraction of their real patches."""
_CUDA_FREE_FRACTION = 0.5


def shares_forwards(device: torch.device) -> bool:
    """Whether bags of similar length share a padded forward on ``device``: on CUDA (one kernel
    for several small bags keeps the GPU busy), not on CPU, where a padded forward buys no speed
    (every matmul is large enough alone) and its padded copy and the chunk's joint activations
    raise peak memory: measured on 48 heavy-tailed bags (median 1,087 patches, D = 1536), the
    in-process peak growth of an epoch fell from 0.57 GB with shared forwards to 0.37 GB with
    every bag alone (``benchmarks/bench_train.py``)."""
    return device.type == "cuda"


def bytes_per_patch(dim: int) -> int:
    """Rough bytes one patch costs in a training forward + backward (float32, ABMIL 512/384):
    the input row, ``H`` and its pre-activation, the gated branches and their gradients."""
    return 4 * (2 * dim + 4 * 512 + 8 * 384)


def auto_patch_budget(device: torch.device, dim: int) -> int:
    """Padded patches per forward: :data:`CPU_PATCH_BUDGET` on CPU; on CUDA half the free memory
    (``torch.cuda.mem_get_info``) over :func:`bytes_per_patch`."""
    if device.type != "cuda":
        return CPU_PATCH_BUDGET
    free, _total = torch.cuda.mem_get_info(device)
    return max(1024, int(free * _CUDA_FREE_FRACTION) // bytes_per_patch(dim))


def plan_chunks(
    lengths: Sequence[int], budget: int, *, slack: float = PADDING_SLACK, share: bool = True
) -> list[list[int]]:
    """Positions of a batch grouped into padded forwards that cost (almost) only real patches.

    ``budget < 0`` keeps the batch whole (one padded forward, the old behaviour). Otherwise bags
    are sorted by length and a chunk grows while ``n * longest <= budget`` and the padding stays
    within ``slack`` of the real patches: ``n * longest <= (1 + slack) * sum(lengths)``. A bag
    longer than ``budget`` is a chunk of its own (:func:`steph.models.abmil.patch_chunking`
    then bounds its memory). ``share=False`` runs every bag alone (no padded copy at all; see
    :func:`shares_forwards`).

    >>> plan_chunks([100, 10, 11, 98, 12], 400)
    [[1, 2, 4], [3, 0]]
    >>> plan_chunks([100, 10], -1)
    [[0, 1]]
    >>> plan_chunks([100, 10, 11], 400, share=False)
    [[1], [2], [0]]
    """
    if budget < 0:
        return [list(range(len(lengths)))]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if not share:
        return [[i] for i in order]
    result: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        k = lengths[i]
        n = len(current) + 1
        if current and (n * k > budget or n * k > (1.0 + slack) * (real + k)):
            result.append(current)
            current, real = [], 0
        current.append(i)
        real += k
    if current:
        result.append(current)
    return result


def plan_packs(lengths: Sequence[int], limit: int) -> list[list[int]]:
    """Positions of a batch grouped into packs of real patches only (no padding): bags sorted by
    length fill a pack while its patches sum to at most ``limit``; a longer bag is a pack alone.

    >>> plan_packs([100, 10, 11, 98, 12], 130)
    [[1, 2, 4], [3], [0]]
    >>> plan_packs([100, 10], 0)
    [[1], [0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    result: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        if current and total + lengths[i] > limit:
            result.append(current)
            current, total = [], 0
        current.append(i)
        total += lengths[i]
    if current:
        result.append(current)
    return result


class Chunk(NamedTuple):
    """The input of one forward: ``x [n, K, D]`` (or, packed, ``[1, N, D]``), ``mask [n, K]`` or
    None (every patch real), ``bins [n]``, ``events [n]``; ``segments``: the bags of a pack
    (:func:`~steph.models.abmil.packed_bags`), on the pack's device, else None; ``keys``: the
    bags' positions in the training data (:mod:`~steph.training.memo`), or None; ``labels``: the
    chunk's SurvMLE label tensors (:func:`~steph.survival.surv_labels`, weighted by the chunk's
    share of the batch), or None (built by the training step); ``groups``: in a pack of several
    training units' bags (:mod:`~steph.training.stacked`), each unit's rows
    (:func:`~steph.models.abmil.weight_groups`), else None."""

    x: Tensor
    mask: Tensor | None
    bins: Tensor
    events: Tensor
    segments: Segments | None = None
    keys: BagKeys | None = None
    labels: SurvLabels | None = None
    groups: Segments | None = None


def load_chunks(
    loaded: Sequence[Tensor],
    bins: Tensor,
    events: Tensor,
    budget: int,
    share: bool = True,
    pack: bool = False,
    pack_limit: int | None = None,
    positions: Sequence[int] | None = None,
    label_spec: LabelSpec | None = None,
) -> list[Chunk]:
    """Bags of one batch as the chunks of :func:`plan_chunks` (``share`` as there), or with
    ``pack`` as the packs of :func:`plan_packs` (``pack_limit`` as in :func:`plan_batch`); a bag
    alone is a view without a mask, not a copy. Padded chunks, packs and their segments are built
    on the bags' device; so are the chunks' :class:`~steph.training.memo.BagKeys` when the bags'
    ``positions`` in the training data are given, and their SurvMLE labels with ``label_spec``."""
    parts = []
    plan = plan_batch(loaded, budget, share, pack, pack_limit)
    for chunk in plan:
        x, mask, seg = chunk_input(loaded, chunk, pack)
        index = torch.tensor(chunk, dtype=torch.long, device=bins.device)
        keys = bag_keys([positions[j] for j in chunk], bins.device) if positions is not None else None
        y, e = bins[index], events[index]
        labels = None
        if label_spec is not None:
            labels = label_spec.labels(y, e, chunk_share(len(chunk), len(loaded), len(plan)))
        parts.append(Chunk(x, mask, y, e, seg, keys, labels))
    return parts


def chunk_share(bags: int, total: int, chunks: int) -> float:
    """The weight of a chunk of ``bags`` of a batch of ``total`` in the batch's loss: 1 for a
    batch in one forward, else ``bags / total`` (SurvMLE is a mean over the batch)."""
    return 1.0 if chunks == 1 else bags / total


def plan_batch(
    loaded: Sequence[Tensor], budget: int, share: bool, pack: bool, pack_limit: int | None = None
) -> list[list[int]]:
    """Positions of the bags of each forward: :func:`plan_packs` with ``pack``, else
    :func:`plan_chunks`. A pack holds at most ``pack_limit`` patches; None is the CPU rule,
    :data:`CPU_PACK_PATCHES` or ``budget`` if smaller (on CUDA the loop passes the budget)."""
    lengths = [int(b.shape[0]) for b in loaded]
    if pack and budget >= 0:
        if pack_limit is None:
            pack_limit = min(budget, CPU_PACK_PATCHES) if budget > 0 else CPU_PACK_PATCHES
        return plan_packs(lengths, pack_limit)
    return plan_chunks(lengths, budget, share=share)


def chunk_input(
    loaded: Sequence[Tensor], chunk: Sequence[int], pack: bool = False
) -> tuple[Tensor, Tensor | None, Segments | None]:
    """``(x, mask, segments)`` of one chunk: a bag alone as a ``[1, K, D]`` view and no mask (no
    copy); a pack as its bags laid end to end ``[1, N, D]`` with their segments."""
    if len(chunk) == 1:
        return loaded[chunk[0]].unsqueeze(0), None, None
    if pack:
        bags = [loaded[j] for j in chunk]
        x = torch.cat(bags).unsqueeze(0)
        return x, None, segments([int(b.shape[0]) for b in bags], x.device)
    return (*pad_bags([loaded[j] for j in chunk]), None)
