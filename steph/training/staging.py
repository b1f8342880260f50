"""Putting the next batch on the device while the current one computes.

On CPU a batch's chunks are views of the cached bags (or packs built from them) and nothing is
copied. On CUDA the background loader thread copies the next batch's bags to the GPU on its own
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
device tensor, so the caching allocator does not reuse their memory for the next copy while
kernels that read them are still queued.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor

from .batching import Chunk

T = TypeVar("T")


class DeviceStager:
    """Stages batches for ``device``: a pass-through on CPU, a side-stream copy on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def stage(self, loaded: Sequence[Tensor], build: Callable[[Sequence[Tensor]], T]) -> T:
        """``build(bags)`` with the bags on the device (called in the loader thread); ``build``
        runs on the side stream, so what else it puts on the device is staged as well."""
        if self.stream is None:
            return build(loaded)
        with torch.cuda.stream(self.stream):
            result = build([bag.to(self.device) for bag in loaded])
        self.stream.synchronize()
        return result

    def claim(self, parts: Sequence[Chunk]) -> None:
        """Mark the staged tensors as used by the current stream (called in the training thread)."""
        if self.stream is None:
            return
        current = torch.cuda.current_stream(self.device)
        for part in parts:
            for tensor in (part.x, part.mask, part.bins, part.events):
                if tensor is not None and tensor.is_cuda:
                    tensor.record_stream(current)
