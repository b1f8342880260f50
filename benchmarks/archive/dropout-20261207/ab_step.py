"""``bench_host``'s method with the whole training step timed: forward, SurvMLE, backward and the
optimiser's update (``steph.training.optim.build_optimizer``, ``fit``'s AdamW), on whichever tree
is imported: run from the root of the tree to measure, ``python
benchmarks/archive/dropout-20261207/ab_step.py``. Written against what the tree before (65a5df8)
and after have; prints one JSON line: model -> bags -> [training thread µs of CPU per bag for
the whole step, of which the optimiser, operators per step]."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import torch

from steph.models.dispatch import DispatchCounter
from steph.synthetic.models import TINY as MODEL
from steph.synthetic.models import tiny_model
from steph.training.batching import load_chunks
from steph.training.loop import FitSettings, backward_chunks, label_spec
from steph.training.memo import bag_memo
from steph.training.optim import build_optimizer

DIM = 16
WARM_UP = 4


def measure(model: torch.nn.Module, n: int, steps: int = 150) -> list[float]:
    g = torch.Generator().manual_seed(n)
    budget, settings = 1 << 20, FitSettings(epochs=1)
    extra: dict[str, Any] = {"label_spec": label_spec(model, settings)}
    optimizer = build_optimizer(list(model.named_parameters()), lr=1e-4, weight_decay=1e-5)
    total = n * WARM_UP
    bags = [torch.randn(k, DIM, generator=g) for k in torch.randint(8, 41, (total,), generator=g).tolist()]
    bins, events = torch.randint(0, 32, (total,), generator=g), torch.arange(total) % 2
    warm = [list(range(i * n, (i + 1) * n)) for i in range(WARM_UP)]
    cpu: list[float] = []
    update: list[float] = []
    model.train()
    with bag_memo(total):
        for step in range(WARM_UP + steps):
            batch = warm[step] if step < WARM_UP else torch.randperm(total, generator=g)[:n].tolist()
            index = torch.tensor(batch)
            loaded = [bags[i] for i in batch]
            optimizer.zero_grad(set_to_none=True)
            parts = load_chunks(
                loaded, bins[index], events[index], budget, True, True, budget, batch, **extra
            )
            start = time.thread_time()
            backward_chunks(model, parts, settings, device=torch.device("cpu"), budget=budget)
            mid = time.thread_time()
            optimizer.step()
            if step >= WARM_UP:
                cpu.append(time.thread_time() - start)
                update.append(time.thread_time() - mid)
        optimizer.zero_grad(set_to_none=True)
        with DispatchCounter() as counter:
            backward_chunks(model, parts, settings, device=torch.device("cpu"), budget=budget)
            optimizer.step()
    per_bag = [round(statistics.median(values) / n * 1e6, 1) for values in (cpu, update)]
    return [*per_bag, counter.count]


def main() -> None:
    torch.set_num_threads(1)
    out = {}
    for name in ("train-source", "steph", "roupkt", "adamerging"):
        model = tiny_model(name, DIM, MODEL, options={"top_k": 2})
        out[name] = {n: measure(model, n) for n in (16, 64)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
