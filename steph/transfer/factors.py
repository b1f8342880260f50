"""What drives transfer: per-pair factors and their rank correlation with the gain.

Between tasks (source S, target T):

- ``cosine``: cosine similarity of the two task vectors of the same fold,
  ``<tau_S, tau_T> / (|tau_S| |tau_T|)`` over every tensor, averaged over folds;
- ``mmd``: the maximum mean discrepancy between the two cancers' patient-mean features
  (each patient's mean patch feature), with a Gaussian kernel
  ``k(x, y) = exp(-|x - y|^2 / (2 sigma^2))``; unbiased estimate

      MMD^2 = 1/(m(m-1)) sum_{i != i'} k(x_i, x_i') + 1/(n(n-1)) sum_{j != j'} k(y_j, y_j')
              - 2/(mn) sum_{i,j} k(x_i, y_j)

  with sigma = ``transfer.mmd_bandwidth``, else the median distance between all pooled points
  (the median heuristic). Larger = the cancers' slides look less alike.

Within the source task: ``n_train`` (its training patients), ``event_rate`` (events among them)
and ``own_c`` (its own cancer-specific test C-index), averaged over folds.

Each factor's Spearman correlation with the gain over pairs comes with a two-sided permutation
p-value: the factor's values are permuted over the pairs ``transfer.permutations`` times and

    p = (1 + #{perm: |rho_perm| >= |rho|}) / (1 + permutations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FACTORS: dict[str, str] = {
    "cosine": "cosine similarity of the task vectors",
    "mmd": "MMD of the patient-mean features (Gaussian kernel)",
    "n_train": "source training patients",
    "event_rate": "source event rate",
    "own_c": "source's own test C-index",
}
"""Factor name -> label (table and plot axis)."""


def cosine(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """``<a, b> / (|a| |b|)``; NaN when either vector is zero.

    >>> cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])).__round__(4)
    0.7071
    """
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return float("nan")
    return float(np.dot(a, b) / (na * nb))


def median_bandwidth(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """The median Euclidean distance between distinct points of the pooled sample (1.0 if all coincide)."""
    z = np.concatenate([x, y])
    d2 = _sq_dists(z, z)
    upper = d2[np.triu_indices(len(z), k=1)]
    med = float(np.sqrt(np.median(upper))) if upper.size else 0.0
    return med if med > 0 else 1.0


def _sq_dists(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    out: NDArray[np.float64] = np.maximum(d2, 0.0)
    return out


def mmd2(x: NDArray[np.float64], y: NDArray[np.float64], *, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 of samples ``x`` ``[m, D]`` and ``y`` ``[n, D]`` (module docstring); NaN
    when either sample has fewer than 2 points."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        return float("nan")
    sigma = bandwidth if bandwidth is not None else median_bandwidth(x, y)
    gamma = 1.0 / (2.0 * sigma * sigma)
    kxx = np.exp(-gamma * _sq_dists(x, x))
    kyy = np.exp(-gamma * _sq_dists(y, y))
    kxy = np.exp(-gamma * _sq_dists(x, y))
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def ranks(values: ArrayLike) -> NDArray[np.float64]:
    """Ranks 1..n, ties given their average rank.

    >>> ranks([10, 20, 20, 5]).tolist()
    [2.0, 3.5, 3.5, 1.0]
    """
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="mergesort")
    out = np.empty(len(v))
    sorted_v = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        out[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return out


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rho: Pearson's correlation of the average ranks; NaN when either is constant.

    rho = sum (R_i - mean R)(Q_i - mean Q) / sqrt(sum (R_i - mean R)^2 sum (Q_i - mean Q)^2)
    """
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


@dataclass(frozen=True)
class Correlation:
    """Spearman's rho of one factor with the gain, its permutation p-value and the pairs used."""

    factor: str
    rho: float
    p: float
    pairs: int
    permutations: int


def permutation_spearman(
    factor: str, x: Sequence[float], y: Sequence[float], *, permutations: int, seed: int
) -> Correlation:
    """Spearman's rho of the pairs where both values are finite, and its two-sided permutation
    p-value (module docstring); NaN with fewer than 3 pairs or a constant factor."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3:
        return Correlation(factor, float("nan"), float("nan"), len(a), permutations)
    rho = spearman(a, b)
    if math.isnan(rho) or permutations == 0:
        return Correlation(factor, rho, float("nan"), len(a), permutations)
    rng = np.random.default_rng(seed)
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    perms = np.array([rng.permutation(ra) for _ in range(permutations)])
    null = (perms @ rb) / den
    p = (1.0 + float((np.abs(null) >= abs(rho) - 1e-12).sum())) / (1.0 + permutations)
    return Correlation(factor, rho, p, len(a), permutations)
