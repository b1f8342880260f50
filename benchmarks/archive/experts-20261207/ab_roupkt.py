"""ROUPKT's whole training step (``bench_host``'s ``measure``: packs, bag memo, the update
included, one intra-op thread) with 4 and 12 sources, on two trees alternately, each in a fresh
process: ``python benchmarks/archive/experts-20261207/ab_roupkt.py BEFORE_TREE AFTER_TREE
[ROUNDS]`` with the trees' roots (a ``git worktree`` of the old commit, this checkout), the
interpreter running this script for both. The race is ``fused-20261207/ab.py``'s, run with this
measurement. Prints one JSON object: tree -> sources -> bags -> one figure per round, ``[CPU µs
per bag, of which the update, operators per step]``, each figure the training thread's median
over 150 steps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

CODE = """
import json, sys, torch
sys.path.insert(0, ".")
from benchmarks import bench_host
from steph.synthetic.models import TINY, tiny_model
torch.set_num_threads(1)
out = {}
for sources in (4, 12):
    names = [f"S{i}" for i in range(sources)]
    model = tiny_model("roupkt", bench_host.DIM, TINY, sources=names, options={"top_k": 2})
    out[sources] = {}
    for n in (16, 64):
        r = bench_host.measure(model, n, "packs", 150)
        out[sources][n] = [r["cpu_us_per_bag"], r["optimizer_cpu_us_per_bag"], r["operators_per_step"]]
print(json.dumps(out))
"""


def main() -> None:
    path = Path(__file__).resolve().parent.parent / "fused-20261207" / "ab.py"
    spec = importlib.util.spec_from_file_location("ab_race", path)
    assert spec is not None and spec.loader is not None
    race = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(race)
    race.CODE = CODE  # the race's per-process measurement, replaced
    race.main()


if __name__ == "__main__":
    main()
