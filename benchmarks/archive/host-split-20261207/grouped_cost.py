"""What STEPH's grouped products cost on CPU tensors, bag by bag, at ``bench_host``'s tiny size.

STEPH runs three per-bag products a step (the merged encoder's ``feat_proj`` and its two
attention layers; the width-1 score layer is a row-wise dot product), each as one
``grouped_mm`` forward and backward over a pack. On CPU tensors ``grouped_mm`` loops over the
bags (one small matrix product and its slicing per bag); on CUDA it is one kernel. This times,
with one intra-op thread, the forward and backward of the three products alone for packs of 16
and 64 bags of 8-40 patches (D = 16, widths 8, as ``bench_host``), and of one shared-weight
product of the same rows for comparison: the difference per bag is the part of STEPH's
per-bag figure that no number of bags per step removes on CPU tensors.

    python benchmarks/archive/host-split-20261207/grouped_cost.py

Prints one JSON object: bags -> figures in µs (best of 5 rounds of 500 repetitions).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from steph.models.abmil import segments

torch.set_num_threads(1)
DIM, EMB, ATTN = 16, 8, 8


def best_us(step: Callable[[], None], reps: int = 500, rounds: int = 5) -> float:
    for _ in range(50):
        step()
    times = []
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(reps):
            step()
        times.append((time.thread_time() - start) / reps * 1e6)
    return round(min(times), 1)


def figures(n_bags: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(n_bags)
    sizes = torch.randint(8, 41, (n_bags,), generator=g).tolist()
    seg = segments(sizes)
    rows = sum(sizes)
    x = torch.randn(rows, DIM, generator=g)
    h = torch.randn(rows, EMB, generator=g, requires_grad=True)
    w1 = torch.randn(n_bags, EMB, DIM, generator=g, requires_grad=True)
    wa = torch.randn(n_bags, ATTN, EMB, generator=g, requires_grad=True)
    wb = torch.randn(n_bags, ATTN, EMB, generator=g, requires_grad=True)
    shared = torch.randn(EMB, DIM, generator=g, requires_grad=True)

    def grouped() -> None:
        # x needs no gradient (the features), h does (the projected patches): as in a step
        y1 = F.grouped_mm(x, w1.transpose(1, 2), offs=seg.ends)
        ya = F.grouped_mm(h, wa.transpose(1, 2), offs=seg.ends)
        yb = F.grouped_mm(h, wb.transpose(1, 2), offs=seg.ends)
        torch.autograd.backward([y1, ya, yb], [torch.ones_like(y1), torch.ones_like(ya), torch.ones_like(yb)])

    def one_shared() -> None:
        y = F.linear(x, shared)
        torch.autograd.backward([y], [torch.ones_like(y)])

    g_us, s_us = best_us(grouped), best_us(one_shared)
    return {
        "patches": rows,
        "grouped_three_us": g_us,
        "shared_one_us": s_us,
        "grouped_three_us_per_bag": round(g_us / n_bags, 1),
    }


def main() -> None:
    print(json.dumps({n: figures(n) for n in (16, 64)}))


if __name__ == "__main__":
    main()
