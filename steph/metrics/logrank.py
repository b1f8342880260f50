"""The two-group log-rank test (Mantel 1966), as lifelines' ``logrank_test``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class LogRank:
    """Chi-square statistic (1 degree of freedom) and p-value; NaN with a ``reason`` if undefined."""

    statistic: float
    p_value: float
    observed: tuple[int, int]
    """Events observed in group 0 and group 1."""
    expected: tuple[float, float]
    """Events expected in each group under the null hypothesis of equal hazards."""
    reason: str = ""


def logrank_test(time: ArrayLike, event: ArrayLike, group: ArrayLike) -> LogRank:
    """Test equal hazards in two groups (``group`` is boolean: True = group 1).

    At each distinct event time s_k, with n_k at risk (n_1k of group 1) and d_k events (d_1k
    in group 1), under H0 d_1k is hypergeometric:

        E_1 = sum_k d_k n_1k / n_k
        V   = sum_k d_k (n_1k / n_k) (1 - n_1k / n_k) (n_k - d_k) / (n_k - 1)
        X^2 = (O_1 - E_1)^2 / V  ~  chi^2_1,     p = P(chi^2_1 > X^2)

    >>> res = logrank_test([1, 2, 3, 4, 5, 6], [1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0])
    >>> round(res.statistic, 3), round(res.p_value, 4)
    (5.052, 0.0246)
    """
    t = np.asarray(time, dtype=np.float64).ravel()
    e = np.asarray(event).astype(bool).ravel()
    g = np.asarray(group).astype(bool).ravel()
    observed = (int((e & ~g).sum()), int((e & g).sum()))
    if not g.any() or g.all():
        return LogRank(
            float("nan"), float("nan"), observed, (float("nan"),) * 2, "one of the groups is empty"
        )
    if not e.any():
        return LogRank(float("nan"), float("nan"), observed, (0.0, 0.0), "no events")
    event_times = np.unique(t[e])
    at_risk = (t[None, :] >= event_times[:, None]).astype(np.float64)
    n = at_risk.sum(axis=1)
    n1 = at_risk[:, g].sum(axis=1)
    at_time = (t[None, :] == event_times[:, None]) & e[None, :]
    d = at_time.sum(axis=1).astype(np.float64)
    share = n1 / n
    expected1 = float((d * share).sum())
    factor = np.divide(n - d, n - 1.0, out=np.zeros_like(n), where=n > 1)
    variance = float((d * share * (1.0 - share) * factor).sum())
    expected = (float(d.sum()) - expected1, expected1)
    if variance <= 0:
        return LogRank(
            float("nan"), float("nan"), observed, expected, "zero variance (no informative event times)"
        )
    stat = (observed[1] - expected1) ** 2 / variance
    # chi-square survival with one degree of freedom: P(Z^2 > x) = erfc(sqrt(x / 2)) (no scipy.stats
    # import, which costs 1-5 CPU-seconds at the start of every merge and evaluate process)
    return LogRank(float(stat), math.erfc(math.sqrt(float(stat) / 2.0)), observed, expected)
