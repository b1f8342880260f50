"""TIES-merging as the STEPH reference computes it (``model/utils_merge.py``).

The reference's trim step keeps, in each row ``v [P]`` of the stacked task vectors, the
entries whose magnitude reaches the ``k``-th smallest one, ``k = P - floor(density P)``:

    keep_p = |v_p| >= kthvalue(|v|, k)

which is ``floor(density P) + 1`` entries when the magnitudes are distinct (one more than a
plain top-``floor(density P)``), and every entry tied with the threshold. At ``density = 1``
(k = 0, where ``kthvalue`` is undefined) everything is kept. Sign election and the disjoint
merge are :func:`steph.task_vectors.elect_sign` / :func:`~steph.task_vectors.disjoint_merge`.
Source: Yadav et al., TIES-Merging, NeurIPS 2023; github.com/liupei101/STEPH.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from ..task_vectors import StateDict, disjoint_merge, elect_sign, flat_spec, flatten, unflatten


def trim_kth(matrix: Tensor, density: float) -> Tensor:
    """Zero every entry of each row of ``matrix [N, P]`` below the row's ``k``-th smallest
    magnitude, ``k = P - floor(density P)`` (the reference's ``topk_values_mask``).

    >>> trim_kth(torch.tensor([[0.1, -3.0, 2.0, 0.5, 0.2]]), 0.2).tolist()
    [[0.0, -3.0, 2.0, 0.0, 0.0]]
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    rows = matrix.reshape(matrix.shape[0], -1)
    k = rows.shape[1] - int(rows.shape[1] * density)
    if k < 1:
        return matrix.clone()
    threshold = rows.abs().kthvalue(k, dim=1, keepdim=True).values
    return torch.where(rows.abs() >= threshold, rows, torch.zeros_like(rows)).reshape(matrix.shape)


def ties(
    vectors: Sequence[Mapping[str, Tensor]],
    keys: Sequence[str],
    *,
    density: float = 0.2,
    reduce: Literal["mean", "sum"] = "mean",
) -> StateDict:
    """TIES over the ``keys`` tensors flattened jointly: :func:`trim_kth`, elect, disjoint merge."""
    spec = flat_spec(vectors[0], keys)
    matrix = torch.stack([flatten(v, keys) for v in vectors])
    trimmed = trim_kth(matrix, density)
    return dict(unflatten(disjoint_merge(trimmed, elect_sign(trimmed), reduce=reduce), spec))


def pairwise_with_target(
    target: Mapping[str, Tensor],
    vectors: Sequence[Mapping[str, Tensor]],
    keys: Sequence[str],
    *,
    density: float = 0.2,
) -> list[StateDict]:
    """``[TIES_sum(tau_t, tau_j) for tau_j in vectors]`` (the reference's
    ``preprocess_task_vectors='ties_merging'``). With ``vectors = [tau_t, tau_s1, ...]`` the
    target's own entry is ``TIES_sum(tau_t, tau_t) = 2 trim(tau_t)``."""
    return [ties([target, v], keys, density=density, reduce="sum") for v in vectors]
