"""The optimiser's update alone, old against new implementation side by side in one process:
``python benchmarks/archive/dropout-20261207/optimizer_ab.py OLD_TREE NEW_TREE`` from the new
tree's root (each tree's ``steph/training/optim.py`` loaded as a module), over the trainable
parameters of the four tiny models of ``bench_host`` (one thread) and of ABMIL at D = 1536 (two
threads), random gradients, best of 5 rounds of the median of 300 (20) steps, µs of CPU."""

import importlib.util
import json
import statistics
import sys
import time

import torch

from steph.config import ModelConfig
from steph.models.abmil import create_abmil
from steph.synthetic.models import TINY, tiny_model


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


old = load(sys.argv[1] + "/steph/training/optim.py", "old_optim")
new = load(sys.argv[2] + "/steph/training/optim.py", "new_optim")
torch.set_num_threads(1)


def bench(model, mod, reps):
    opt = mod.build_optimizer(list(model.named_parameters()), lr=1e-4, weight_decay=1e-5)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)
    for _ in range(5):
        opt.step()
    ts = []
    for _ in range(reps):
        t = time.thread_time()
        opt.step()
        ts.append(time.thread_time() - t)
    return statistics.median(ts) * 1e6


out = {}
for name in ["train-source", "steph", "roupkt", "adamerging"]:
    m = tiny_model(name, 16, TINY, options={"top_k": 2})
    n = sum(1 for p in m.parameters() if p.requires_grad)
    r = {"old": [], "new": []}
    for _ in range(5):
        r["old"].append(bench(m, old, 300))
        r["new"].append(bench(m, new, 300))
    out[name] = {"params": n, "old_us": round(min(r["old"]), 1), "new_us": round(min(r["new"]), 1)}
torch.set_num_threads(2)
m = create_abmil(1536, ModelConfig())
r = {"old": [], "new": []}
for _ in range(5):
    r["old"].append(bench(m, old, 20))
    r["new"].append(bench(m, new, 20))
out["abmil-1536 (2 threads)"] = {"old_us": round(min(r["old"]), 1), "new_us": round(min(r["new"]), 1)}
print(json.dumps(out))
