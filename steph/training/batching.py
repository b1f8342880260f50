"""Patient bags of different lengths as padded batches with a mask."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor


def pad_bags(bags: Sequence[Tensor], *, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Stack bags ``[K_i, D]`` into ``x [B, K_max, D]`` (zeros) and ``mask [B, K_max]`` (True = real)."""
    if not bags:
        raise ValueError("pad_bags needs at least one bag")
    k_max = max(int(b.shape[0]) for b in bags)
    dim = int(bags[0].shape[1])
    x = torch.zeros(len(bags), k_max, dim, dtype=bags[0].dtype)
    mask = torch.zeros(len(bags), k_max, dtype=torch.bool)
    for i, bag in enumerate(bags):
        x[i, : bag.shape[0]] = bag
        mask[i, : bag.shape[0]] = True
    if device is not None:
        x = x.to(device, non_blocking=True)
        mask = mask.to(device, non_blocking=True)
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
