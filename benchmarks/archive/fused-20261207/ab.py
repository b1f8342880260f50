"""``bench_host``'s whole training step (its ``measure``: packs, the update included, one intra-op
thread) on two trees alternately, each in a fresh process: ``python
benchmarks/archive/fused-20261207/ab.py BEFORE_TREE AFTER_TREE [ROUNDS]`` with the trees' roots
(a ``git worktree`` of the old commit, this checkout), the interpreter running this script for
both. Prints one JSON object: tree -> model -> bags -> one figure per round, each the training
thread's median µs of CPU per bag over 150 steps, and the operators of a step."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, sys, torch
sys.path.insert(0, ".")
from benchmarks import bench_host
torch.set_num_threads(1)
out = {}
for name in ("train-source", "steph", "roupkt", "adamerging"):
    model = bench_host.build(name)
    out[name] = {}
    for n in (16, 64):
        r = bench_host.measure(model, n, "packs", 150)
        out[name][n] = [r["cpu_us_per_bag"], r["optimizer_cpu_us_per_bag"], r["operators_per_step"]]
print(json.dumps(out))
"""


def main() -> None:
    trees = {"before": sys.argv[1], "after": sys.argv[2]}
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    result: dict[str, dict[str, dict[str, list[list[float]]]]] = {tree: {} for tree in trees}
    for _ in range(rounds):
        for tree, root in trees.items():
            done = subprocess.run(
                [sys.executable, "-c", CODE], cwd=root, capture_output=True, text=True, check=True
            )
            for name, by_bags in json.loads(done.stdout).items():
                for n, figures in by_bags.items():
                    result[tree].setdefault(name, {}).setdefault(n, []).append(figures)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
