"""Task-vector preprocessing computed once per process for the merge units that share it.

``merge --paper`` runs a target fold's rows one after the other, in one process. Rows that
preprocess the task vectors the same way need the same result: Iso-C AM with and without a
hypernetwork pair the target's vector with every other by Iso-C (a few SVDs per weight matrix:
0.28 s a pair at D = 1536 on 2 CPU cores, 3.6 s for a target's 13), TIES AM with and without one
by TIES (0.44 s for 13). :func:`once_per_vectors` keeps the last :data:`KEPT` results, keyed by
what identifies the vectors (the sha256 of their files, :attr:`MergeContext.vector_hashes`) and
by how they were processed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

from ..task_vectors import StateDict

KEPT = 2
"""Results kept: the rows that share one follow each other within a fold (each result is one
state dict per task vector: about 62 MB for 13 vectors at D = 1536)."""

_KEPT: OrderedDict[Hashable, list[StateDict]] = OrderedDict()


def once_per_vectors(
    identity: tuple[str, ...], how: Hashable, compute: Callable[[], list[StateDict]]
) -> list[StateDict]:
    """``compute()``, or the result kept from an earlier call with the same ``identity`` (the
    sha256 of the vectors' files, in order; empty: unknown, always computed) and ``how`` (the
    preprocessing and its settings). The tensors are shared between callers: not to be changed
    in place."""
    if not identity:
        return compute()
    key = (identity, how)
    if key in _KEPT:
        _KEPT.move_to_end(key)
        return list(_KEPT[key])
    result = compute()
    _KEPT[key] = result
    while len(_KEPT) > KEPT:
        _KEPT.popitem(last=False)
    return list(result)
