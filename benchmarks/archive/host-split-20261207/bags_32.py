"""``bench_host``'s whole step (its ``measure``: packs path, the update included, 150 steps,
median, one intra-op thread) at 16, 32 and 64 bags, for the four tiny models: the 32-bag figure
is what one step over two units of 16 bags would cost through the same operators, a direct
check of ``split``'s projection. ``python benchmarks/archive/host-split-20261207/bags_32.py``,
one JSON line a run (µs of CPU per bag)."""

from __future__ import annotations

import json
import sys

import torch

sys.path.insert(0, ".")
from benchmarks import bench_host  # run from the repository root

torch.set_num_threads(1)
out = {}
for name in ("train-source", "steph", "roupkt", "adamerging"):
    model = bench_host.build(name)
    out[name] = {n: bench_host.measure(model, n, "packs", 150)["cpu_us_per_bag"] for n in (16, 32, 64)}
print(json.dumps(out))
