"""Harrell's concordance index with scikit-survival's ``concordance_index_censored`` semantics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class Concordance:
    """C = (concordant + 0.5 tied_risk) / comparable; ``value`` is NaN with a ``reason`` if undefined."""

    value: float
    concordant: int
    discordant: int
    tied_risk: int
    comparable: int
    reason: str = ""

    @property
    def defined(self) -> bool:
        return self.comparable > 0


def harrell_c(time: ArrayLike, event: ArrayLike, risk: ArrayLike, *, tied_tol: float = 1e-8) -> Concordance:
    """Harrell's C-index on raw times (higher risk = earlier event expected).

    A pair (i, j) is comparable when e_i = 1 and t_i < t_j, or t_i = t_j with i an event and
    j censored; two events at the same time are not comparable. It is concordant when
    risk_i > risk_j, and counts 0.5 when |risk_i - risk_j| <= tied_tol:

        C = (sum_{comparable} 1[r_i > r_j] + 0.5 * 1[|r_i - r_j| <= tol]) / #comparable

    O(n^2) memory-light loop over events; ~1,000 patients take milliseconds.

    >>> round(harrell_c([1, 2, 3], [1, 1, 0], [3.0, 2.0, 1.0]).value, 3)
    1.0
    """
    t = np.asarray(time, dtype=np.float64).ravel()
    e = np.asarray(event).astype(bool).ravel()
    r = np.asarray(risk, dtype=np.float64).ravel()
    if not (t.shape == e.shape == r.shape):
        raise ValueError(
            f"time, event and risk must have the same length, got {t.shape}, {e.shape}, {r.shape}"
        )
    concordant = discordant = tied = comparable = 0
    for i in np.flatnonzero(e):
        later = (t > t[i]) | ((t == t[i]) & ~e)
        later[i] = False
        n = int(later.sum())
        if n == 0:
            continue
        diff = r[i] - r[later]
        is_tied = np.abs(diff) <= tied_tol
        tied += int(is_tied.sum())
        concordant += int(((diff > 0) & ~is_tied).sum())
        discordant += int(((diff < 0) & ~is_tied).sum())
        comparable += n
    if comparable == 0:
        reason = "no events" if not e.any() else "no comparable pairs"
        return Concordance(float("nan"), 0, 0, 0, 0, reason)
    return Concordance((concordant + 0.5 * tied) / comparable, concordant, discordant, tied, comparable)
