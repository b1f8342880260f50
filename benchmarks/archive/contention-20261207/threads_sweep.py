"""One training step on CPU with 1 and 2 intra-op threads across feature widths, model widths and
bag sizes (ABMIL and STEPH, fit's CPU path): the measurements behind steph.threads.MIN_FLOPS_PER_THREAD.
Run from the repository root: python benchmarks/archive/contention-20261207/threads_sweep.py"""

import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch

sys.path.insert(0, ".")
from steph.config import ModelConfig
from steph.synthetic.models import TRAIN_SOURCE, tiny_model
from steph.training.batching import load_chunks, shares_forwards
from steph.training.loop import FitSettings, backward_chunks, label_spec, pack_limit, packs, patch_budget
from steph.training.optim import build_optimizer

cpu = torch.device("cpu")


def steps(name, dim, emb, attn, bag, batch, n, threads):
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    model = tiny_model(
        TRAIN_SOURCE if name == "train-source" else name,
        dim,
        ModelConfig(dim_emb=emb, dim_attn=attn),
        options={"top_k": 2},
    ).train()
    settings = FitSettings(epochs=1)
    opt = build_optimizer(list(model.named_parameters()), lr=1e-4, weight_decay=1e-5)
    budget = patch_budget(0, cpu, dim)
    share, pack, limit, labels = (
        shares_forwards(cpu),
        packs(model),
        pack_limit(cpu, budget),
        label_spec(model, settings),
    )
    bs = []
    for _ in range(3):
        bags = [
            torch.randn(max(1, int(k)), dim, generator=g)
            for k in (torch.rand(batch, generator=g) * bag + bag / 2)
        ]
        bs.append((bags, torch.randint(0, 32, (batch,), generator=g), torch.arange(batch) % 2))
    ts = []
    for i in range(n):
        bags, bins, ev = bs[i % 3]
        t = time.perf_counter()
        parts = load_chunks(bags, bins, ev, budget, share, pack, limit, list(range(batch)), labels)
        opt.zero_grad(set_to_none=True)
        backward_chunks(model, parts, settings, device=cpu, budget=budget)
        opt.step()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts[2:]) * 1e3


for cfg in [
    (128, 64, 32, 37, 8),
    (384, 128, 64, 100, 16),
    (768, 256, 128, 200, 16),
    (768, 512, 384, 300, 16),
    (1536, 512, 384, 1000, 16),
]:
    for name in ("train-source", "steph"):
        n = 12 if cfg[0] < 1536 else 5
        r = {t: steps(name, *cfg, n, t) for t in (1, 2, 1, 2)}
        print(name, cfg, {t: round(v, 2) for t, v in r.items()}, "2t/1t", round(r[2] / r[1], 2), flush=True)
