"""The tiny model's matrix products on CPU: PyTorch (MKL on x86) against NumPy (OpenBLAS), one
thread, CPU µs per product (best of 3 runs of 3,000), and the rate at 2,048^3:
``OPENBLAS_NUM_THREADS=1 python benchmarks/archive/cpu-packs-20261207/tiny_products.py``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import torch

torch.set_num_threads(1)


def cpu_us(f: Callable[[], object], n: int = 3000) -> float:
    best = float("inf")
    for _ in range(3):
        for _ in range(100):
            f()
        start = time.thread_time()
        for _ in range(n):
            f()
        best = min(best, (time.thread_time() - start) / n * 1e6)
    return round(best, 1)


def product(x: Any, y: Any) -> Callable[[], object]:
    return lambda: x @ y


out: dict[str, object] = {}
for m, k, n in [(400, 16, 8), (1600, 16, 8), (400, 512, 384)]:
    a, b = torch.randn(m, k), torch.randn(k, n)
    an, bn = a.numpy(), b.numpy()
    out[f"{m}x{k}x{n}"] = {"torch_us": cpu_us(product(a, b)), "numpy_us": cpu_us(product(an, bn))}
a = torch.randn(2048, 2048)
an = a.numpy()
for name, f in (("torch", product(a, a)), ("numpy", product(an, an))):
    f()
    start = time.perf_counter()
    for _ in range(5):
        f()
    out[f"{name}_gflops_2048"] = round(2 * 2048**3 * 5 / (time.perf_counter() - start) / 1e9, 1)
print(json.dumps(out, indent=2))
