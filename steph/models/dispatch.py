"""Operators dispatched by PyTorch: the host's share of a step, where :mod:`.flops` counts the arithmetic.

A tiny model's step costs what Python and the dispatcher cost per operator, so the number of ATen
operators a forward and backward dispatch is the figure that must not grow with the bags of a
step (``benchmarks/bench_host.py`` and its test count them on the path CUDA runs).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode


class DispatchCounter(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch leaves the base untyped
    """Counts every ATen operator dispatched inside the block (forward, backward, copies).

    >>> import torch
    >>> with DispatchCounter() as counter:
    ...     _ = torch.ones(3) + 1
    >>> counter.count, counter.by_name["add.Tensor"]
    (2, 1)

    ``by_name`` counts each operator overload (``"_local_scalar_dense.default"``: a read of a
    tensor's value by the host, which on CUDA waits for the GPU). The mode is the calling
    thread's: operators of other threads (``fit``'s loader) are not counted.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # TorchDispatchMode.__init__ is untyped
        self.count = 0
        self.by_name: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        self.by_name[func.__name__] += 1
        return func(*args, **(kwargs or {}))
