"""Per-bag constants of one training run, computed once per patient instead of once per epoch.

A frozen, deterministic part of a model gives each bag the same output in every epoch: ROUPKT's
frozen expert encoders, run without dropout, embed a patient's bag to the same ``[E, dim_emb]``
rows whether it is the first epoch or the twentieth. :func:`~steph.training.loop.fit` opens a
:class:`BagMemo` over its training data (:func:`bag_memo`) and runs every forward inside
:func:`forward_bags` with the positions of its bags in that data (:class:`BagKeys`, built where
the batch is staged, so that a forward on CUDA copies nothing from the host). A model then asks
for such a constant through :func:`memoized`:

    rows = memoized("roupkt.experts", lambda: frozen_embeddings(x))

Outside a memo (a forward of one's own) ``compute`` simply runs. Inside one, a forward whose
bags all have rows gets them with one ``index_select``; otherwise ``compute`` runs on the whole
forward and its rows are stored (bags of the same forward share a product, so a forward is
computed whole). The result is exactly the recomputing path's, up to the rounding of a bag
computed beside other bags in a pack (about 1e-7).

A memo opened with the patients' ids (``bag_memo(n, ids=...)``) outlives one ``fit``: a ``fit``
over those patients inside it stores its rows there, and
:func:`~steph.training.loop.predict` inside it reads the rows of the patients it holds (a merge
unit predicts its training patients after training: ROUPKT's frozen experts then run once per
training patient in all, not once more for the predictions). Rows are stored by name, not by
model: one memo serves one model's forwards.

Memory: one ``[N, *row]`` tensor per name on the rows' device, N the training bags; for ROUPKT
with 1,000 patients, 12 experts and 512-d embeddings, 1,000 x 12 x 512 x 4 B = 24.6 MB (fp32).
It lives as long as the :func:`bag_memo` block (one ``fit``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import NamedTuple

import torch
from torch import Tensor

log = logging.getLogger(__name__)


class BagKeys(NamedTuple):
    """The bags of one forward as positions in the training data: ``positions`` (Python ints,
    for the host's bookkeeping) and ``device_index`` (the same, int64 on the forward's device)."""

    positions: tuple[int, ...]
    device_index: Tensor


def bag_keys(positions: Sequence[int], device: torch.device | str = "cpu") -> BagKeys:
    """:class:`BagKeys` of ``positions`` with their index on ``device``."""
    keys = tuple(int(p) for p in positions)
    return BagKeys(keys, torch.tensor(keys, dtype=torch.long, device=device))


class BagMemo:
    """Rows per bag and per name for ``total`` training bags (see the module docstring); with
    ``ids``, the patients of those bags, position by position."""

    def __init__(self, total: int, ids: Sequence[str] | None = None) -> None:
        self.total = total
        self._rows: dict[str, Tensor] = {}
        self._filled: dict[str, set[int]] = {}
        self._position: dict[str, int] | None = None
        if ids is not None:
            if len(ids) != total or len(set(ids)) != total:
                raise ValueError(f"a bag memo of {total} bags needs {total} distinct ids, got {len(ids)}")
            self._position = {pid: i for i, pid in enumerate(ids)}

    def positions(self, ids: Sequence[str]) -> list[int] | None:
        """The positions of the patients ``ids`` in the memo; None when it was opened without
        ids or lacks one of them."""
        if self._position is None or any(pid not in self._position for pid in ids):
            return None
        return [self._position[pid] for pid in ids]

    def rows(self, name: str, keys: BagKeys, compute: Callable[[], Tensor]) -> Tensor:
        """``[len(keys), *row]``: the stored rows of ``keys`` when every one is stored, else
        ``compute()`` (one row per bag of the forward, in order), stored for later forwards."""
        store, filled = self._rows.get(name), self._filled.setdefault(name, set())
        if store is not None and filled.issuperset(keys.positions):
            return store.index_select(0, keys.device_index)
        value = compute().detach()
        if value.shape[0] != len(keys.positions):
            raise ValueError(
                f"memo {name!r}: {value.shape[0]} rows for a forward of {len(keys.positions)} bags"
            )
        if store is None:
            store = value.new_empty((self.total, *value.shape[1:]))
            self._rows[name] = store
            log.debug(
                "memo %s: %d rows of %s, %.1f MB",
                name,
                self.total,
                tuple(value.shape[1:]),
                store.nbytes / 1e6,
            )
        store.index_copy_(0, keys.device_index, value.to(store.dtype))
        filled.update(keys.positions)
        return value

    def stored(self, name: str) -> int:
        """How many bags have rows under ``name``."""
        return len(self._filled.get(name, ()))

    def part(self, start: int, count: int, ids: Sequence[str] | None = None) -> BagMemo:
        """Positions ``start`` to ``start + count - 1`` as a memo of their own (of the patients
        ``ids``, when given), their rows shared, not copied: one unit's part of a memo that
        several units trained in (:mod:`~steph.training.stacked`)."""
        if start < 0 or count < 0 or start + count > self.total:
            raise ValueError(f"positions {start}..{start + count - 1} of a bag memo of {self.total} bags")
        memo = BagMemo(count, ids)
        for name, store in self._rows.items():
            memo._rows[name] = store[start : start + count]
            memo._filled[name] = {p - start for p in self._filled[name] if start <= p < start + count}
        return memo


_MEMO: ContextVar[BagMemo | None] = ContextVar("bag_memo", default=None)
_KEYS: ContextVar[BagKeys | None] = ContextVar("bag_keys", default=None)


@contextlib.contextmanager
def bag_memo(total: int, ids: Sequence[str] | None = None) -> Iterator[BagMemo]:
    """A :class:`BagMemo` for ``total`` training bags (of the patients ``ids``, when given),
    active within the block."""
    memo = BagMemo(total, ids)
    token = _MEMO.set(memo)
    try:
        yield memo
    finally:
        _MEMO.reset(token)


@contextlib.contextmanager
def using_memo(memo: BagMemo) -> Iterator[BagMemo]:
    """``memo`` (one already filled: a unit's :meth:`BagMemo.part`) active within the block."""
    token = _MEMO.set(memo)
    try:
        yield memo
    finally:
        _MEMO.reset(token)


def active_memo() -> BagMemo | None:
    """The :class:`BagMemo` of the enclosing :func:`bag_memo` block, or None."""
    return _MEMO.get()


@contextlib.contextmanager
def forward_bags(keys: BagKeys | None) -> Iterator[None]:
    """Within the block, the forward's bags are ``keys`` (None: unknown, nothing is memoized)."""
    token = _KEYS.set(keys)
    try:
        yield
    finally:
        _KEYS.reset(token)


def memoized(name: str, compute: Callable[[], Tensor]) -> Tensor:
    """``compute()``, a per-bag constant ``[bags, *row]`` of the current forward, through the
    active :class:`BagMemo` when one is open and the forward's bags are known. ``compute`` must
    not depend on trainable state or randomness (frozen weights, no dropout)."""
    memo, keys = _MEMO.get(), _KEYS.get()
    if memo is None or keys is None:
        return compute()
    return memo.rows(name, keys, compute)
