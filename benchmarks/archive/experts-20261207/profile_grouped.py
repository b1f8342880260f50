"""The share of STEPH's tiny-model step (``bench_host``'s packs path, one thread) spent in the
grouped products on CPU tensors, where ``torch._grouped_mm`` runs bag by bag: ``python
benchmarks/archive/experts-20261207/profile_grouped.py`` from the repository root. 40 steps of
16 and of 64 bags under ``torch.profiler`` after 20 untimed ones, inside a bag memo; prints
JSON: per bag count the profiled CPU µs a step (every operator's self time), the grouped
products' inclusive time (``aten::_grouped_mm`` with the per-bag ``mm``, slicing and reads of
the offsets under it) and their share. The profiler's own cost inflates short operators, so the
share, not the µs, is the figure."""

from __future__ import annotations

import json
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, ".")
from benchmarks import bench_host
from steph.training.batching import load_chunks
from steph.training.loop import FitSettings, backward_chunks, label_spec
from steph.training.memo import bag_memo

STEPS, WARM = 40, 20


def _profile(n: int) -> dict[str, float]:
    model = bench_host.build("steph")
    g, bags, bins, events = bench_host._pool(n)
    settings = FitSettings(epochs=1)
    labels = label_spec(model, settings)
    model.train()
    optimizer = bench_host._optimizer(model)

    def step(batch: list[int]) -> None:
        index = torch.tensor(batch)
        loaded = [bags[i] for i in batch]
        budget = bench_host.BUDGET
        parts = load_chunks(loaded, bins[index], events[index], budget, True, True, budget, batch, labels)
        optimizer.zero_grad(set_to_none=True)
        backward_chunks(model, parts, settings, device=torch.device("cpu"), budget=budget)
        optimizer.step()

    batches = bench_host._batches(g, n, STEPS + WARM)
    with bag_memo(len(bags)):
        for batch in batches[:WARM]:
            step(batch)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for batch in batches[WARM : WARM + STEPS]:
                step(batch)
    events_ = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events_) / STEPS
    grouped = sum(e.cpu_time_total for e in events_ if e.key == "aten::_grouped_mm") / STEPS
    return {
        "profiled_cpu_us_per_step": round(total, 1),
        "grouped_products_us_per_step": round(grouped, 1),
        "grouped_share": round(grouped / total, 3),
    }


def main() -> None:
    torch.set_num_threads(1)
    print(json.dumps({n: _profile(n) for n in (16, 64)}, indent=2))


if __name__ == "__main__":
    main()
