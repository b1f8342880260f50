"""ROUPKT's and AdaMerging's host cost per bag with their folds trained together, against one
fold alone.

Alternating rounds in one process, one intra-op thread: each round measures, per model, a step of
1, 2 and 5 units of 16 bags each (``bench_host.measure_stacked``, the step of ``fit_stacked``)
and then one unit alone through ``fit``'s step (``bench_host.measure``, packs path), each the
median step of ``STEPS`` steps, in µs of this thread's CPU time per bag.

    python benchmarks/archive/stacked-units-20261207/rounds.py [STEPS] [ROUNDS]

Prints one JSON object: model -> figure -> one value per round.
"""

from __future__ import annotations

import json
import sys

import torch

from benchmarks import bench_host


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    out: dict[str, dict[str, list[float]]] = {name: {} for name in bench_host.STACKED}
    for _ in range(rounds):
        for name in bench_host.STACKED:
            for units in bench_host.UNITS:
                row = bench_host.measure_stacked(name, units, 16, steps, cpu)
                out[name].setdefault(f"units_{units}", []).append(row["cpu_us_per_bag"])
            alone = bench_host.measure(bench_host.build(name), 16, "packs", steps)
            out[name].setdefault("alone_16", []).append(alone["cpu_us_per_bag"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
