"""The update alone, stephctl's AdamW on its fused kernel and on its multi-tensor path side by
side in one process: the four tiny models of ``bench_host`` (one thread) and ABMIL at D = 1536
(two threads), random gradients, best of 5 repeats of 300 steps after 20 untimed ones. Run from
the root of a tree that has ``build_optimizer(..., fused=)``: ``python
benchmarks/archive/fused-20261207/optimizer.py``; prints JSON: model -> path -> µs a step."""

from __future__ import annotations

import json
import time

import torch

from steph.models.abmil import ABMIL
from steph.synthetic.models import TINY, tiny_model
from steph.training.optim import build_optimizer


def best_step_us(model: torch.nn.Module, fused: bool | None, repeats: int = 5, steps: int = 300) -> float:
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)
    optimizer = build_optimizer(list(model.named_parameters()), lr=1e-4, weight_decay=1e-5, fused=fused)
    for _ in range(20):
        optimizer.step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.step()
        best = min(best, (time.perf_counter() - start) / steps)
    return round(best * 1e6, 1)


def main() -> None:
    out: dict[str, dict[str, float]] = {}
    torch.set_num_threads(1)
    for name in ("train-source", "steph", "roupkt", "adamerging"):
        out[name] = {
            path: best_step_us(tiny_model(name, 16, TINY, options={"top_k": 2}), fused)
            for path, fused in (("multi-tensor", False), ("fused", None))
        }
    torch.set_num_threads(2)
    out["abmil-1536"] = {
        path: best_step_us(ABMIL(1536), fused) for path, fused in (("multi-tensor", False), ("fused", None))
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
