"""Putting the next batch on the device while the current one computes.

On CPU the loader thread only gets the next batch's bags (from the cache, or read from disk
while the current batch computes); its chunks (views of the bags, or packs of small bags copied
end to end) are built when the training thread claims the batch. Built in the loader thread,
the packs' copies ran beside the compute's own intra-op threads on the same cores, and the
compute's parallel regions waited for descheduled threads. Measured on the 2-core development
machine (48 heavy-tailed bags, D = 1536, 4 epochs of ``fit``): 12.95 s at 1.66-1.71 busy cores
with the packs built by the loader, 11.40 s at 1.93 with no loader thread at all, 1.93-1.94
cores with the packs built by the training thread (docs/benchmarks.md, sixth pass).

On CUDA the background loader thread copies the next batch's bags to the GPU on its own
stream, from the cached (pageable) tensors, and builds the padded chunks there
(:func:`~steph.training.batching.pad_bags` allocates on the bags' device): no page-locked
staging copy on the host and no padded copy in host memory.

Why not ``pin_memory()``: pinning every chunk of the current and the prefetched batch made
PyTorch's caching host allocator keep page-locked blocks of every rounded size it met (bags
vary in length batch to batch), and page-locking costs kernel time: measured on an H100
(docs/benchmarks.md, GPU), the stage's peak host RSS was 1.69x the one-bag loop's and its CPU
time 1.8x. A pageable copy on a side stream still overlaps the compute on the default stream,
because it runs in the loader thread.

Stream safety: the copies are finished (``stream.synchronize()`` in the loader thread) before
the batch is handed over, and :meth:`DeviceStager.claim` records the consuming stream on every
device tensor of the chunks (:func:`chunk_tensors`: inputs, segments, keys and SurvMLE labels),
so the caching allocator does not reuse their memory for the next copy while kernels that read
them are still queued.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor

import torch
from torch import Tensor

from .batching import Chunk

_new_stream: Callable[[torch.device], torch.cuda.Stream] = torch.cuda.Stream
"""``torch.cuda.Stream``, whose ``__new__`` torch leaves unannotated, called through a typed name."""

Staged = Callable[[], list[Chunk]]
"""A staged batch: called by :meth:`DeviceStager.claim`, it returns the batch's chunks."""


class DeviceStager:
    """Stages batches for ``device``: a pass-through on CPU, a side-stream copy on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = _new_stream(device) if device.type == "cuda" else None

    def stage(self, loaded: Sequence[Tensor], build: Callable[[Sequence[Tensor]], list[Chunk]]) -> Staged:
        """Stage the bags ``loaded`` (called in the loader thread). On CUDA the bags are copied
        to the device and ``build(bags)`` runs there now, on the side stream, so what else it
        puts on the device is staged as well; on CPU ``build`` runs at :meth:`claim`."""
        if self.stream is None:
            return functools.partial(build, loaded)
        with torch.cuda.stream(self.stream):
            result = build([bag.to(self.device) for bag in loaded])
        self.stream.synchronize()
        return lambda: result

    def claim(self, staged: Staged) -> list[Chunk]:
        """The chunks of a staged batch, for the training thread: built now on CPU; on CUDA
        every device tensor is marked as used by the current stream."""
        parts = staged()
        if self.stream is None:
            return parts
        current = torch.cuda.current_stream(self.device)
        for part in parts:
            for tensor in chunk_tensors(part):
                if tensor.is_cuda:
                    tensor.record_stream(current)
        return parts


def claimed_in_turn(
    stager: DeviceStager, jobs: Sequence[Callable[[], Staged]], pool: Executor
) -> Iterator[list[Chunk]]:
    """The chunks of each of ``jobs`` (one batch each, staged by ``stager``), in order, each job
    submitted to ``pool`` (the loader thread) when the one before it is claimed: the next batch
    is read while the current one computes, across epoch boundaries too."""
    pending = pool.submit(jobs[0]) if jobs else None
    for k in range(len(jobs)):
        assert pending is not None
        parts = stager.claim(pending.result())
        pending = pool.submit(jobs[k + 1]) if k + 1 < len(jobs) else None
        yield parts


def chunk_tensors(part: Chunk) -> list[Tensor]:
    """Every tensor a chunk holds: its input, mask and labels, its segments', groups' and keys'."""
    found = [part.x, part.bins, part.events, *([part.mask] if part.mask is not None else [])]
    for seg in (part.segments, part.groups):
        if seg is not None:
            found += [seg.index, seg.ends, seg.columns, seg.row_weights]
    if part.keys is not None:
        found.append(part.keys.device_index)
    if part.labels is not None:
        labels = part.labels
        found += [labels.index, labels.weights, labels.masks, labels.at_y]
    return found
