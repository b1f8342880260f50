"""Cost of the paper's full protocol in CPU core-hours, from measured per-patch figures.

Protocol (STEPH_SPEC sections 1, 3 and 8): 13 TCGA cancers, 7,268 patients, 5 folds.

- train-source: 13 cancers x 5 folds, each trains 20 epochs on its fold's training split (80% of
  the patients, whole batches of 16) and predicts every patient of the cancer once;
- merge: 13 targets x 5 folds of STEPH and every registered baseline, each trained 20 epochs on
  the target's training split (the learned ones) and predicting the target's patients once.

Per patch and epoch, a method costs one of (measured with the bare unpadded compute of
``bench_train.py`` and ``bench_merge.py``, CPU seconds = core-seconds):

- ``abmil``: forward + backward of an ABMIL (train-source; AdaMerging and its TIES, Surgery and
  Iso-C/Iso-CTS variants, which back-propagate through one merged encoder to their coefficients);
- ``steph``: STEPH's per-bag merged encoder, hypernetwork and regularisers (``bench_merge``);
- ``roupkt``: 1 + m frozen encoders forward (m = 12 sources) and its router's forward + backward;
- ``forward``: data-free methods (model-avg, task-arithmetic, TIES): a frozen merged encoder
  forward and a new head.

Bag sizes: the heavy-tailed default (log-normal, median 1,500, sd(log) 0.8, clipped to
150..12,000), whose mean is computed here; costs scale linearly with the mean bag size.

    python benchmarks/protocol_cost.py TRAIN_JSON MERGE_JSON   # outputs of the two benchmarks
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

PATIENTS = 7268
CANCERS = 13
FOLDS = 5
EPOCHS = 20
TRAIN_FRACTION = 0.8
SOURCES = 12
KIND = {
    "steph": "steph",
    "roupkt": "roupkt",
    "adamerging": "abmil",
    "ties-adamerging": "abmil",
    "surgery-adamerging": "abmil",
    "iso-c-adamerging": "abmil",
    "iso-cts-adamerging": "abmil",
}
"""Cost class of each method; any other registered method is a ``forward`` (data-free) one."""


def mean_bag(median: float = 1500.0, spread: float = 0.8, lo: int = 150, hi: int = 12_000) -> float:
    """Mean of ``clip(median * exp(spread * N(0, 1)), lo, hi)`` (numerical integration)."""
    n = 20_000
    total = 0.0
    for i in range(n):
        z = -8.0 + 16.0 * (i + 0.5) / n
        total += min(hi, max(lo, median * math.exp(spread * z))) * math.exp(-z * z / 2)
    return total * (16.0 / n) / math.sqrt(2 * math.pi)


def cost(per_patch: dict[str, float], methods: list[str], bag: float) -> dict[str, Any]:
    """Core-hours per stage and method from per-patch CPU seconds."""
    train = per_patch["train"]
    fwd = per_patch["predict"]
    per_epoch = {
        "abmil": train,
        "steph": per_patch["steph_train"],
        "roupkt": (1 + SOURCES) * fwd + train,
        "forward": fwd,
    }
    per_predict = {
        "abmil": fwd,
        "steph": per_patch["steph_predict"],
        "roupkt": (2 + SOURCES) * fwd,
        "forward": fwd,
    }
    train_patches = FOLDS * TRAIN_FRACTION * EPOCHS * PATIENTS * bag  # summed over the cancers
    predict_patches = FOLDS * PATIENTS * bag
    rows = {"train-source": (train * train_patches + fwd * predict_patches) / 3600}
    for method in methods:
        kind = KIND.get(method, "forward")
        rows[f"merge {method}"] = (
            per_epoch[kind] * train_patches + per_predict[kind] * predict_patches
        ) / 3600
    total = sum(rows.values())
    return {
        "mean_bag_patches": round(bag),
        "core_hours": {k: round(v, 1) for k, v in rows.items()},
        "total_core_hours": round(total, 1),
        "wall_days_on_2_cores": round(total / 2 / 24, 1),
    }


def from_benchmarks(train_json: Path, merge_json: Path) -> dict[str, Any]:
    train = json.loads(train_json.read_text())
    merge = json.loads(merge_json.read_text())
    train = train.get("benchmarks", {}).get("train", {}).get("figures", train)
    merge = merge.get("benchmarks", {}).get("merge", {}).get("figures", merge)
    t, m = train["per_patch"], merge["stage"]["per_patch"]
    per_patch = {
        "train": t["train_cpu_s_per_patch_epoch"],
        "predict": t["predict_cpu_s_per_patch"],
        "steph_train": m["train_cpu_s_per_patch_epoch"],
        "steph_predict": m["predict_cpu_s_per_patch"],
    }
    from steph.merging import MERGE_METHODS

    methods = list(MERGE_METHODS.names())
    return {"per_patch_cpu_s": per_patch, **cost(per_patch, methods, mean_bag())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_json", type=Path, help="output of bench_train.py (or benchmarks/run.py)")
    parser.add_argument("merge_json", type=Path, help="output of bench_merge.py (or benchmarks/run.py)")
    args = parser.parse_args()
    print(json.dumps(from_benchmarks(args.train_json, args.merge_json), indent=2))


if __name__ == "__main__":
    main()
