"""Harrell's and Uno's concordance index as pair statistics (estimate + bootstrap).

Both count the same comparable pairs (:func:`~steph.metrics.statistic.comparable_pairs`) and
the same pair scores (1 concordant, 0.5 tied risk); Uno's C weights each pair by the inverse
squared probability of remaining uncensored at the earlier time, which removes the dependence
of Harrell's C on the censoring distribution (Uno et al., Stat. Med. 2011).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .km import StepFunction
from .statistic import PairRatio, comparable_pairs, concordance_scores


def _no_pairs_reason(event: np.ndarray) -> str:
    if not event.any():
        return "no events (every patient is censored)"
    return "no comparable pairs (no event happens before another patient's follow-up ends)"


def harrell_statistic(
    time: ArrayLike, event: ArrayLike, risk: ArrayLike, *, tied_tol: float = 1e-8
) -> PairRatio:
    """Harrell's C as a :class:`PairRatio` (same value as :func:`~steph.metrics.harrell.harrell_c`).

        C = sum_ij comp_ij s_ij / sum_ij comp_ij

    with comp the comparable pairs and s_ij = 1[r_i > r_j] + 0.5 1[|r_i - r_j| <= tied_tol].
    """
    e = np.asarray(event).astype(bool).ravel()
    comp = comparable_pairs(time, e).astype(np.float64)
    reason = "" if comp.any() else _no_pairs_reason(e)
    return PairRatio(comp * concordance_scores(risk, tied_tol=tied_tol), comp, reason)


def uno_statistic(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    censoring: StepFunction,
    *,
    tau: float | None = None,
    tied_tol: float = 1e-8,
) -> PairRatio:
    """Uno's IPCW C-index, matching scikit-survival's ``concordance_index_ipcw``.

        C_uno = sum_ij w_i comp_ij s_ij / sum_ij w_i comp_ij,   w_i = 1[t_i < tau] / G(t_i)^2

    G is the censoring survival of the *training* set (:func:`~steph.metrics.km.censoring_survival`),
    evaluated at the test times. ``tau=None`` means no truncation (scikit-survival's default).
    Where scikit-survival raises (an event at which G = 0, or later than every training time
    while G > 0) this function gives G = 0 events weight 0 and holds G constant past the last
    training time, so a fold is still scored.

    Args:
        time: test follow-up times, shape ``(n,)``.
        event: test event indicators, shape ``(n,)``.
        risk: predicted risk (higher = earlier event), shape ``(n,)``.
        censoring: G(t) from the training set.
        tau: truncation time; events at ``t >= tau`` carry no weight.
        tied_tol: risk differences up to this count as ties (0.5).
    """
    t = np.asarray(time, dtype=np.float64).ravel()
    e = np.asarray(event).astype(bool).ravel()
    g = censoring(t)
    weight = np.zeros_like(t)
    usable = e & (g > 0) & (t < (np.inf if tau is None else tau))
    weight[usable] = 1.0 / np.square(g[usable])
    comp = comparable_pairs(t, e).astype(np.float64) * weight[:, None]
    if comp.any():
        reason = ""
    elif not e.any() or not comparable_pairs(t, e).any():
        reason = _no_pairs_reason(e)
    elif tau is not None and not (e & (t < tau)).any():
        reason = f"no events before tau = {tau:g}"
    else:
        reason = "the training censoring distribution is 0 at every event time"
    return PairRatio(comp * concordance_scores(risk, tied_tol=tied_tol), comp, reason)
