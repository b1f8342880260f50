"""STEPH and hypernetwork AdaMerging on CPU: a training step with every bag alone (the CPU path
until this change) against packs of up to ``CPU_PACK_PATCHES`` real patches (the CPU path now),
both as ``fit`` plans them (``load_chunks`` with the CPU rule), alternately in one process:
``python benchmarks/archive/cpu-packs-20261207/cpu_paths.py [ROUNDS]`` from the repository root.

Two scales, 16 heavy-tailed bags a step (``median * exp(0.8 N(0, 1))`` patches, at least 8),
random task vectors, top-2 of 4 sources, the process's intra-op threads (2 here):

- ``demo``: D = 64, widths 64 / 32, median 100 patches (the demo's model, about its bags);
- ``paper``: D = 1536, widths 512 / 384 (UNI2-h and the reference model), median 1,500.

Prints JSON: per scale and model the bags' mean and largest size, and per path the median and
best wall ms of a step (forward, backward, the AdamW update) over the rounds, and the ratio of
the medians (packs / alone)."""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

sys.path.insert(0, ".")
from steph.config import ModelConfig
from steph.synthetic.models import tiny_model
from steph.training.batching import load_chunks
from steph.training.loop import FitSettings, backward_chunks, label_spec, pack_limit
from steph.training.optim import build_optimizer

SCALES = {"demo": (64, 64, 32, 100), "paper": (1536, 512, 384, 1500)}
MODELS = {"steph": {"top_k": 2}, "adamerging": {"hypernet": True}}


def race(name: str, scale: str, rounds: int) -> dict[str, object]:
    dim, emb, attn, median = SCALES[scale]
    model = tiny_model(name, dim, ModelConfig(dim_emb=emb, dim_attn=attn), options=MODELS[name])
    g = torch.Generator().manual_seed(0)
    sizes = [max(8, int(median * float(torch.exp(0.8 * torch.randn(1, generator=g))))) for _ in range(16)]
    bags = [torch.randn(k, dim, generator=g) for k in sizes]
    bins, events = torch.randint(0, 32, (16,), generator=g), torch.arange(16) % 2
    settings = FitSettings(epochs=1)
    labels = label_spec(model, settings)
    cpu = torch.device("cpu")
    model.train()
    optimizer = build_optimizer(list(model.named_parameters()), lr=1e-4, weight_decay=1e-5)
    times: dict[str, list[float]] = {"alone": [], "packs": []}
    for r in range(rounds + 1):
        for path in times:
            parts = load_chunks(
                bags, bins, events, 0, False, path == "packs", pack_limit(cpu, 0), None, labels
            )
            optimizer.zero_grad(set_to_none=True)
            start = time.perf_counter()
            backward_chunks(model, parts, settings, device=cpu, budget=0)
            optimizer.step()
            if r:  # the first round warms up
                times[path].append(1000 * (time.perf_counter() - start))
    out: dict[str, object] = {"mean_bag": round(sum(sizes) / 16, 1), "largest_bag": max(sizes)}
    for path, values in times.items():
        out[path] = {"median_ms": round(statistics.median(values), 1), "best_ms": round(min(values), 1)}
    out["packs_over_alone"] = round(statistics.median(times["packs"]) / statistics.median(times["alone"]), 3)
    return out


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    result = {"threads": torch.get_num_threads(), "rounds": rounds}
    for scale in SCALES:
        for name in MODELS:
            result[f"{scale}/{name}"] = race(name, scale, rounds if scale == "demo" else max(2, rounds // 2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
