"""Dropout whose CPU mask costs a quarter of a 64-bit random word per element.

Inverted dropout, as ``torch.nn.functional.dropout``: in training each element is kept with
probability ``1 - p`` and scaled by ``1 / (1 - p)``, so that ``E[dropout(x)] = x``:

    y = x * keep / (1 - p'),   keep ~ Bernoulli(1 - p') per element,   p' = round(p * 2^16) / 2^16

On CPU, torch draws the mask with one Bernoulli sample per element (about 9 ns an element on
the 2-core development machine: at D = 1536 the two attention dropouts of a 2,000-patch bag
cost a sixth of ABMIL's training step). Here one 64-bit random word from the default generator
(``Tensor.random_`` over the full int64 range) gives four independent 16-bit uniforms ``u`` in
``[-2^15, 2^15)``, and an element is kept where ``u >= -2^15 + round(p * 2^16)``. The drop
probability is then ``p'``, ``p`` rounded to a multiple of ``2^-16`` (``p`` itself for the
paper's 0.25: 16384 / 65536), and the scale is ``1 / (1 - p')``, so the expectation stays
exact. Seeded runs repeat exactly (``torch.manual_seed``).

Below :data:`SMALL` elements (a hypernetwork's ``[bags, 512]`` hidden layer of a few bags), on
other devices (CUDA's fused dropout kernel is already fast) and inside
:func:`bernoulli_masks` (the reference's draws, for benchmarks that run the reference loop) it
is ``torch.nn.functional.dropout``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEVELS = 1 << 16
"""The resolution of ``p``: each element's uniform draw takes 16 bits."""

SMALL = 2048
"""Below this many elements torch's CPU draw is the cheaper one (its fixed cost is about half of
the 7 operators here: 13 against 21 µs for 512 elements, 27 against 23.5 for 2,048)."""

_BERNOULLI: ContextVar[bool] = ContextVar("steph_bernoulli_masks", default=False)


def drop_probability(p: float) -> float:
    """``p'``, the probability with which :func:`dropout` drops an element on CPU.

    >>> drop_probability(0.25), drop_probability(0.1)
    (0.25, 0.100006103515625)
    """
    return round(p * LEVELS) / LEVELS


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype) -> Tensor:
    """``keep / (1 - p')`` of ``shape`` on CPU: ``1 / (1 - p')`` where kept, 0 where dropped.

    The 16-bit draws are laid out in ``shape`` with the last dimension rounded up to a multiple
    of 4, filled as 64-bit words, and the padding cut off by a view."""
    dropped = round(p * LEVELS)
    dims = tuple(shape) or (1,)
    last = dims[-1]
    if 0 in dims:
        return torch.empty(shape, dtype=dtype)
    draws = torch.empty((*dims[:-1], -(-last // 4) * 4), dtype=torch.int16)
    draws.view(torch.int64).random_(-(1 << 63), None)
    if draws.shape[-1] != last:
        draws = draws[..., :last]
    keep = (draws >= dropped - LEVELS // 2).to(dtype).mul_(LEVELS / (LEVELS - dropped))
    return keep if len(shape) else keep.view(())


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``x`` with each element dropped with probability ``p`` (rounded to ``2^-16`` on CPU) and
    the rest scaled by ``1 / (1 - p)``, in training; ``x`` itself otherwise (see the module
    docstring).

    >>> _ = torch.manual_seed(0)
    >>> y = dropout(torch.ones(100_000), 0.25)
    >>> sorted(set(y.tolist())), round(float((y == 0).float().mean()), 2)
    ([0.0, 1.3333333730697632], 0.25)
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return x
    active = _STREAMS.get()
    if active is not None:
        return active[0].dropout(x, p, active[1])
    return _draw(x, p)


def _draw(x: Tensor, p: float) -> Tensor:
    """:func:`dropout` in training with ``0 < p <= 1``, from the current generator."""
    if x.device.type != "cpu" or x.numel() < SMALL or _BERNOULLI.get():
        return F.dropout(x, p, True)
    if drop_probability(p) == 1.0:
        return x * 0.0
    return x * keep_mask(x.shape, p, x.dtype)


class UnitStreams:
    """One random stream per training unit, for a packed tensor whose rows are the units' rows
    end to end (``rows``: each unit's count): each unit's slice is dropped as :func:`dropout`
    drops it in that unit's own run, from that unit's generator state, so that units trained
    together draw exactly the masks they draw alone (:mod:`steph.training.stacked`).

    The states are those of the default generator of ``device`` (CPU, or the CUDA device's),
    every unit starting from its state when built; each slice swaps its unit's state in and the
    advanced state out (a few microseconds a unit). The generator's own state is restored after
    each draw."""

    def __init__(self, units: int, device: torch.device) -> None:
        self.device = device
        self.states = [self._get()] * units

    def _get(self) -> Tensor:
        if self.device.type == "cuda":
            return torch.cuda.get_rng_state(self.device)
        return torch.get_rng_state()

    def _set(self, state: Tensor) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state, self.device)
        else:
            torch.set_rng_state(state)

    def dropout(self, x: Tensor, p: float, rows: tuple[int, ...]) -> Tensor:
        """:func:`dropout` of ``x``, whose first dimension holds each unit's ``rows`` in turn."""
        if sum(rows) != x.shape[0] or len(rows) != len(self.states):
            raise ValueError(
                f"dropout over {x.shape[0]} rows in unit streams of {len(self.states)} units with rows {rows}"
            )
        outer = self._get()
        parts = []
        try:
            for u, part in enumerate(x.split_with_sizes(list(rows))):
                self._set(self.states[u])
                parts.append(_draw(part, p))
                self.states[u] = self._get()
        finally:
            self._set(outer)
        return torch.cat(parts)


_STREAMS: ContextVar[tuple[UnitStreams, tuple[int, ...]] | None] = ContextVar(
    "steph_unit_streams", default=None
)


@contextlib.contextmanager
def unit_streams(streams: UnitStreams, rows: tuple[int, ...]) -> Iterator[None]:
    """Within the block, :func:`dropout` draws each unit's ``rows`` of a packed tensor (its
    first dimension) from that unit's stream (:class:`UnitStreams`).

    >>> _ = torch.manual_seed(0)
    >>> alone = [dropout(torch.ones(3, 4), 0.5) for _ in range(2)]   # one unit's two draws
    >>> _ = torch.manual_seed(0)
    >>> streams = UnitStreams(2, torch.device("cpu"))
    >>> with unit_streams(streams, (3, 3)):
    ...     both = [dropout(torch.ones(6, 4), 0.5) for _ in range(2)]
    >>> all(torch.equal(b[:3], a) and torch.equal(b[3:], a) for a, b in zip(alone, both))
    True
    """
    token = _STREAMS.set((streams, tuple(int(r) for r in rows)))
    try:
        yield
    finally:
        _STREAMS.reset(token)


@contextlib.contextmanager
def unit_rows(rows: tuple[int, ...]) -> Iterator[None]:
    """Within the block, the enclosing :func:`unit_streams` (if any) split their tensors' first
    dimension as ``rows`` (a per-bag tensor ``[U * k, ...]``: ``(k,) * U``); outside one, nothing."""
    active = _STREAMS.get()
    token = _STREAMS.set((active[0], tuple(rows)) if active is not None else None)
    try:
        yield
    finally:
        _STREAMS.reset(token)


class Dropout(nn.Dropout):
    """``nn.Dropout`` drawing its mask with :func:`dropout` (same ``p``, no state)."""

    def forward(self, input: Tensor) -> Tensor:
        if self.inplace:  # not used by the project's models; torch's own in-place kernel
            return super().forward(input)
        return dropout(input, self.p, self.training)


@contextlib.contextmanager
def bernoulli_masks() -> Iterator[None]:
    """Within the block :func:`dropout` is ``torch.nn.functional.dropout`` on every device: one
    Bernoulli draw per element, as the reference's ``nn.Dropout`` (its loop in the benchmarks)."""
    token = _BERNOULLI.set(True)
    try:
        yield
    finally:
        _BERNOULLI.reset(token)
