"""Three epochs of ``fit`` of the four tiny models (12 sources, 40 patients, batches of 16, one
thread), then a sha256 of each trained state dict and the epochs' losses: run from a tree's root
(``python benchmarks/archive/experts-20261207/same_weights.py``). At 84455a3 and at this tree
the printed lines are the same. STEPH's regulariser gradient in closed form differs from
autograd's by float32 rounding, which this run does not see (its gamma and beta are 0.005 and
0.05); every other change of the session computes the same values."""

from __future__ import annotations

import hashlib
import sys

import torch

sys.path.insert(0, ".")
from steph.data import BagStore
from steph.survival import SurvivalTargets, time_to_bin
from steph.synthetic.models import TINY, tiny_model
from steph.training.loop import FitSettings, fit


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(3)
    ids = [f"p{i}" for i in range(40)]
    sizes = torch.randint(3, 60, (40,), generator=g).tolist()
    bags = BagStore.in_memory(
        {pid: torch.randn(k, 16, generator=g) for pid, k in zip(ids, sizes, strict=True)}
    )
    times = torch.rand(40, generator=g, dtype=torch.float64) * 5000
    data = SurvivalTargets(ids, times, torch.arange(40) % 2, time_to_bin(times))
    for name in ("train-source", "steph", "roupkt", "adamerging"):
        torch.manual_seed(0)
        model = tiny_model(name, 16, TINY, sources=[f"S{i}" for i in range(12)], options={"top_k": 2})
        losses = fit(model, data, bags, FitSettings(epochs=3, batch_size=16), device=torch.device("cpu"))
        digest = hashlib.sha256()
        for key, value in sorted(model.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().contiguous().numpy().tobytes())
        print(name, digest.hexdigest()[:16], [round(loss, 6) for loss in losses])


if __name__ == "__main__":
    main()
