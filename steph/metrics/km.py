"""Kaplan-Meier estimates of the survival and of the censoring distribution.

The censoring distribution G(t) = P(C > t) gives the inverse-probability-of-censoring weights
of Uno's C-index, the time-dependent AUC and the Brier score. Conventions follow
scikit-survival's ``kaplan_meier_estimator`` / ``CensoringDistributionEstimator`` (and
torchsurv's ``KaplanMeierEstimator``, which agrees): at a time with both events and
censorings, the events happen first, so for G an event at t removes the patient from the risk
set before the censorings at t are counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class StepFunction:
    """A right-continuous step function: 1 before ``times[0]``, ``values[k]`` on [times[k], times[k+1]).

    Beyond the last time the last value is held (torchsurv's convention; scikit-survival raises
    there unless the last value is 0).
    """

    times: NDArray[np.float64]
    """Strictly increasing jump times, shape ``(K,)``."""
    values: NDArray[np.float64]
    """Value from each jump time on, shape ``(K,)``."""

    def __call__(self, t: ArrayLike) -> NDArray[np.float64]:
        """Evaluate at ``t`` (any shape)."""
        t = np.asarray(t, dtype=np.float64)
        idx = np.searchsorted(self.times, t, side="right") - 1
        out = np.ones(t.shape, dtype=np.float64)
        inside = idx >= 0
        out[inside] = self.values[idx[inside]]
        return out


def _counts(
    time: NDArray[np.float64], event: NDArray[np.bool_]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Unique times with the number of events, censorings and patients at risk at each."""
    uniq, inverse = np.unique(time, return_inverse=True)
    # with weights, bincount counts in float64 (numpy's stubs say an integer array); no copy here
    n_events = np.asarray(
        np.bincount(inverse, weights=event.astype(np.float64), minlength=uniq.size), np.float64
    )
    n_total = np.bincount(inverse, minlength=uniq.size).astype(np.float64)
    at_risk: NDArray[np.float64] = time.size - np.concatenate([[0.0], np.cumsum(n_total)[:-1]])
    return uniq, n_events, n_total - n_events, at_risk


def kaplan_meier(time: ArrayLike, event: ArrayLike, *, reverse: bool = False) -> StepFunction:
    """Kaplan-Meier estimate of S(t) = P(T > t), or of G(t) = P(C > t) with ``reverse``.

    With distinct times s_k, d_k events and c_k censorings at s_k and n_k patients with
    time >= s_k:

        S(t) = prod_{s_k <= t} (1 - d_k / n_k)
        G(t) = prod_{s_k <= t} (1 - c_k / (n_k - d_k))        (reverse=True; 0/0 := 0)

    Args:
        time: observed times, shape ``(n,)``.
        event: 1/True where the event was observed, shape ``(n,)``.
        reverse: estimate the censoring distribution instead of the survival.

    >>> km = kaplan_meier([1, 2, 2, 3], [1, 1, 0, 0])
    >>> km([0, 1, 2, 5]).round(3).tolist()
    [1.0, 0.75, 0.5, 0.5]
    >>> kaplan_meier([1, 2, 2, 3], [1, 1, 0, 0], reverse=True)([2, 3]).round(3).tolist()
    [0.5, 0.0]
    """
    t = np.asarray(time, dtype=np.float64).ravel()
    e = np.asarray(event).astype(bool).ravel()
    if t.size == 0:
        return StepFunction(np.empty(0), np.empty(0))
    uniq, d, c, n = _counts(t, e)
    if reverse:
        d, n = c, n - d
    ratio = np.divide(d, n, out=np.zeros_like(d), where=d != 0)
    return StepFunction(uniq, np.cumprod(1.0 - ratio, dtype=np.float64))


def censoring_survival(time: ArrayLike, event: ArrayLike) -> StepFunction:
    """G(t) = P(C > t) of a (training) set: ``kaplan_meier(..., reverse=True)`` (all events: G = 1)."""
    return kaplan_meier(time, event, reverse=True)
