"""Host overhead per bag: a training step of a tiny model, where the arithmetic is about zero.

With D = 16 and widths 8, a step's time is what Python and the operator dispatcher cost. It is
measured for train-source (ABMIL), STEPH (top-2 of 4 sources), ROUPKT and AdaMerging, with 16 and
64 bags of 8-40 patches per step, on three execution paths over the same CPU tensors:

- ``packs``: what CUDA runs now: the step's bags laid end to end in packs up to the patch budget
  (one pack here), per-bag encoders as grouped products;
- ``padded``: what CUDA ran before: length-sorted padded chunks (10 % padding slack);
- ``alone``: every bag alone (the CPU path of per-bag encoders).

Each figure is the median over ``--steps`` steps of forward + backward (``backward_chunks``) per
bag, in microseconds of wall time and of this thread's CPU time (one intra-op thread, so the
CPU time is the whole cost and holds on a busy machine), and the operators dispatched per step. Target: under 50 µs per bag on the
packs path (issue: the protocol on one GPU).

    python -m benchmarks.bench_host [--steps 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from steph.models.dispatch import DispatchCounter
from steph.synthetic.models import TINY as MODEL
from steph.synthetic.models import tiny_model
from steph.training.loop import FitSettings, backward_chunks, load_chunks

DIM = 16
PATHS = {"packs": (True, True), "padded": (True, False), "alone": (False, False)}
"""path -> (share, pack) of :func:`steph.training.batching.load_chunks`."""


def build(name: str) -> torch.nn.Module:
    """A tiny model of ``name`` (train-source or a merge method, STEPH and ROUPKT top-2 of 4
    sources) over random task vectors."""
    return tiny_model(name, DIM, MODEL, options={"top_k": 2})


def measure(model: torch.nn.Module, n_bags: int, path: str, steps: int) -> dict[str, float]:
    share, pack = PATHS[path]
    g = torch.Generator().manual_seed(n_bags)
    budget = 1 << 20
    settings = FitSettings(epochs=1)
    times, cpu = [], []
    model.train()
    for step in range(steps + 1):
        sizes = torch.randint(8, 41, (n_bags,), generator=g).tolist()
        bags = [torch.randn(k, DIM, generator=g) for k in sizes]
        bins, events = torch.randint(0, 32, (n_bags,), generator=g), torch.arange(n_bags) % 2
        start, cpu0 = time.perf_counter(), time.thread_time()
        parts = load_chunks(bags, bins, events, budget, share=share, pack=pack, pack_limit=budget)
        backward_chunks(model, parts, settings, device=torch.device("cpu"), budget=budget)
        if step:  # the first step warms up
            times.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - cpu0)
    with DispatchCounter() as counter:
        backward_chunks(model, parts, settings, device=torch.device("cpu"), budget=budget)
    return {
        "us_per_bag": round(statistics.median(times) / n_bags * 1e6, 1),
        "cpu_us_per_bag": round(statistics.median(cpu) / n_bags * 1e6, 1),
        "operators_per_step": counter.count,
    }


def run(quick: bool = False, steps: int | None = None) -> dict[str, Any]:
    steps = steps or (5 if quick else 20)
    torch.set_num_threads(1)  # host overhead, not parallel arithmetic
    result: dict[str, Any] = {"dim": DIM, "widths": [MODEL.dim_emb, MODEL.dim_attn], "steps": steps}
    for name in ("train-source", "steph", "roupkt", "adamerging"):
        model = build(name)
        result[name] = {f"{path}_{n}": measure(model, n, path, steps) for path in PATHS for n in (16, 64)}
    result["target_met"] = {
        name: all(result[name][f"packs_{n}"]["cpu_us_per_bag"] < 50 for n in (16, 64))
        for name in ("train-source", "steph", "roupkt", "adamerging")
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(steps=args.steps)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
