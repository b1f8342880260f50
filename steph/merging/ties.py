"""TIES pairs for the AdaMerging pool (the reference's ``preprocess_task_vectors: ties_merging``).

TIES itself (trim, elect, disjoint merge) is :func:`steph.task_vectors.ties_merge`, the one TIES
of stephctl: its trim keeps the reference's ``floor(density P) + 1`` largest magnitudes
(:func:`steph.task_vectors.trim`). Source: Yadav et al., TIES-Merging, NeurIPS 2023;
github.com/liupei101/STEPH (``model/utils_merge.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from ..task_vectors import StateDict, ties_merge


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
    return [ties_merge([target, v], keys=keys, density=density, reduce="sum") for v in vectors]
