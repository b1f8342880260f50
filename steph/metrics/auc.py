"""Cumulative/dynamic time-dependent AUC with inverse-probability-of-censoring weights."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .km import StepFunction
from .statistic import PairRatio, concordance_scores


def cumulative_dynamic_auc(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    horizon: float,
    censoring: StepFunction,
    *,
    tied_tol: float = 1e-8,
) -> PairRatio:
    """AUC(tau) of scikit-survival's ``cumulative_dynamic_auc`` at one horizon, as a pair statistic.

    Cases had the event by the horizon (t_i <= tau, e_i = 1), controls are still at risk after
    it (t_j > tau); cases are weighted by w_i = 1 / G(t_i) with G the training censoring
    survival (Uno et al. 2007; Hung and Chiang 2010):

        AUC(tau) = sum_{i case, j control} w_i s_ij / sum_{i case, j control} w_i

    with s_ij = 1[r_i > r_j] + 0.5 1[|r_i - r_j| <= tied_tol]. This equals the trapezoidal area
    under scikit-survival's weighted ROC curve, which merges risks that differ by at most
    ``tied_tol`` from their sorted neighbour (the same thing unless ties form chains of
    near-equal values). Cases at which G = 0 get weight 0 (scikit-survival raises there).

    Args:
        time: test follow-up times, shape ``(n,)``.
        event: test event indicators, shape ``(n,)``.
        risk: risk of an event by ``horizon`` (e.g. 1 - S(horizon)), shape ``(n,)``.
        horizon: tau, in the unit of ``time``.
        censoring: G(t) from the training set.
    """
    t = np.asarray(time, dtype=np.float64).ravel()
    e = np.asarray(event).astype(bool).ravel()
    g = censoring(t)
    case = e & (t <= horizon)
    control = t > horizon
    weight = np.zeros_like(t)
    usable = case & (g > 0)
    weight[usable] = 1.0 / g[usable]
    den = weight[:, None] * control[None, :].astype(np.float64)
    if not case.any():
        reason = f"no events by {horizon:g} days"
    elif not control.any():
        reason = f"no patient followed beyond {horizon:g} days"
    elif not usable.any():
        reason = f"the training censoring distribution is 0 at every event time up to {horizon:g} days"
    else:
        reason = ""
    return PairRatio(den * concordance_scores(risk, tied_tol=tied_tol), den, reason)
