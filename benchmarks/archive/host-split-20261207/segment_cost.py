"""The packed softmax, pooling and mean of ``steph.models.abmil`` on CPU tensors, by bags a pack.

``segment_softmax`` and ``segment_mean`` build dense ``[bags, patches]`` matrices, so their cost
grows with bags x patches, that is with the square of the bags of a pack. This times, with one
intra-op thread, the forward and backward of the attention softmax and pooling (``A @ H``) and of
STEPH's per-bag mean (``segment_mean``) at ``bench_host``'s sizes (bags of 8-40 patches, width
8), against an index-based softmax and pooling (``scatter_reduce`` max, ``index_add`` sums), whose
cost grows with the patches only. ``python benchmarks/archive/host-split-20261207/segment_cost.py``:
one JSON object, bags -> µs (best of 5 rounds of 300).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import torch

from steph.models.abmil import segment_mean, segment_softmax, segments

torch.set_num_threads(1)


def best_us(step: Callable[[], None], reps: int = 300, rounds: int = 5) -> float:
    for _ in range(30):
        step()
    times = []
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(reps):
            step()
        times.append((time.thread_time() - start) / reps * 1e6)
    return round(min(times), 1)


def figures(n_bags: int) -> dict[str, float | int]:
    g = torch.Generator().manual_seed(n_bags)
    seg = segments(torch.randint(8, 41, (n_bags,), generator=g).tolist())
    rows = sum(seg.sizes)
    s = torch.randn(rows, requires_grad=True)
    h = torch.randn(rows, 8, requires_grad=True)
    e = torch.randn(rows, 8, requires_grad=True)

    def dense_pool() -> None:
        z = segment_softmax(s, seg) @ h
        z.backward(torch.ones_like(z))

    def dense_mean() -> None:
        m = segment_mean(e, seg)
        m.backward(torch.ones_like(m))

    def indexed_pool() -> None:
        top = torch.zeros(n_bags).scatter_reduce(0, seg.index, s.detach(), "amax", include_self=False)
        p = torch.exp(s - top.index_select(0, seg.index))
        alpha = p / torch.zeros(n_bags).index_add(0, seg.index, p).index_select(0, seg.index)
        z = torch.zeros(n_bags, 8).index_add(0, seg.index, alpha.unsqueeze(1) * h)
        z.backward(torch.ones_like(z))

    return {
        "patches": rows,
        "dense_pool_us": best_us(dense_pool),
        "dense_mean_us": best_us(dense_mean),
        "indexed_pool_us": best_us(indexed_pool),
    }


def main() -> None:
    print(json.dumps({n: figures(n) for n in (16, 32, 64)}))


if __name__ == "__main__":
    main()
