"""ROUPKT's predictions of its training patients after training, with the unit's bag memo kept
for them (this tree) and without (each prediction runs the frozen encoders again): 12 sources
(13 frozen encoders), D = 1536, the reference widths, 16 training patients of heavy-tailed bags
(200-4,000 patches, mean about 1,500), one epoch of batches of 16 that fills the memo, 2 threads,
best of 3. Run from the root of this tree: ``python
benchmarks/archive/fused-20261207/roupkt_predict.py``; prints JSON."""

from __future__ import annotations

import json
import time

import torch

from steph.config import ModelConfig
from steph.data import BagStore
from steph.survival import SurvivalTargets
from steph.synthetic.models import tiny_model
from steph.training import memo
from steph.training.loop import FitSettings, fit, predict

DIM, PATIENTS = 1536, 16
SOURCES = tuple(f"S{i}" for i in range(12))


def main() -> None:
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    sizes = (200 + torch.distributions.Pareto(1.0, 1.6).sample((PATIENTS,)) * 600).clamp(max=4000).long()
    bags = {f"P{i}": torch.randn(int(k), DIM, generator=g) for i, k in enumerate(sizes)}
    times = torch.linspace(100, 3000, PATIENTS, dtype=torch.float64)
    data = SurvivalTargets(list(bags), times, torch.arange(PATIENTS) % 2, (times / 365).long())
    store, cpu = BagStore.in_memory(bags), torch.device("cpu")
    model = tiny_model("roupkt", DIM, ModelConfig(), sources=SOURCES, options={"top_k": 2})
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    with memo.bag_memo(PATIENTS, ids=data.ids):
        start = time.perf_counter()
        fit(model, data, store, FitSettings(epochs=1, batch_size=16), device=cpu, named_params=params)
        fit_s = time.perf_counter() - start
        kept = []
        for _ in range(3):
            start = time.perf_counter()
            from_memo, _ = predict(model, data.ids, store, device=cpu)
            kept.append(time.perf_counter() - start)
    again = []
    for _ in range(3):
        start = time.perf_counter()
        recomputed, _ = predict(model, data.ids, store, device=cpu)
        again.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "patients": PATIENTS,
                "mean_patches": round(float(sizes.float().mean())),
                "fit_one_epoch_s": round(fit_s, 2),
                "predict_train_from_memo_s": round(min(kept), 3),
                "predict_train_recomputed_s": round(min(again), 3),
                "max_abs_hazard_difference": float((from_memo - recomputed).abs().max()),
            }
        )
    )


if __name__ == "__main__":
    main()
