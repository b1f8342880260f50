"""Time-dependent Brier score and its integral, with inverse-probability-of-censoring weights."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .km import StepFunction
from .statistic import WeightedMean

IBS_QUANTILES = (0.1, 0.9)
"""The IBS grid spans these quantiles of the test follow-up times."""
IBS_POINTS = 100
"""Number of equally spaced grid times of the IBS."""


def ibs_times(
    time: ArrayLike, *, quantiles: tuple[float, float] = IBS_QUANTILES, points: int = IBS_POINTS
) -> NDArray[np.float64]:
    """The integration grid: ``points`` equally spaced times between two quantiles of ``time``.

    The default 10th-90th percentile range avoids the first days, where nobody has had an event
    yet, and the sparse tail, where the censoring weights explode; it always lies inside
    [min t, max t), as scikit-survival requires. Returns the unique grid (may be shorter).
    """
    t = np.asarray(time, dtype=np.float64).ravel()
    lo, hi = np.quantile(t, quantiles)
    return np.unique(np.linspace(lo, hi, points))


def brier_contributions(
    time: ArrayLike,
    event: ArrayLike,
    survival: NDArray[np.float64],
    times: NDArray[np.float64],
    censoring: StepFunction,
) -> NDArray[np.float64]:
    """Per-patient terms of the Brier score, shape ``[n, K]`` (Graf et al., Stat. Med. 1999).

        b_i(t) = S_i(t)^2 1[t_i <= t, e_i = 1] / G(t_i) + (1 - S_i(t))^2 1[t_i > t] / G(t)
        BS(t)  = mean_i b_i(t)

    as scikit-survival's ``brier_score``: G(t_i) is the training censoring survival at the
    patient's own time (not its left limit), and a term whose G is 0 counts 0.

    Args:
        time: test follow-up times, shape ``(n,)``.
        event: test event indicators, shape ``(n,)``.
        survival: predicted S_i(t) at ``times``, shape ``[n, K]``.
        times: evaluation times, shape ``(K,)``.
        censoring: G(t) from the training set.
    """
    t = np.asarray(time, dtype=np.float64).ravel()
    e = np.asarray(event).astype(bool).ravel()
    inv_g_own = _inverse(censoring(t))
    inv_g_grid = _inverse(censoring(times))
    case = e[:, None] & (t[:, None] <= times[None, :])
    control = t[:, None] > times[None, :]
    return (
        np.square(survival) * case * inv_g_own[:, None]
        + np.square(1.0 - survival) * control * inv_g_grid[None, :]
    )


def _inverse(g: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.divide(1.0, g, out=np.zeros_like(g), where=g > 0)


def integrated_brier_score(
    time: ArrayLike,
    event: ArrayLike,
    survival: NDArray[np.float64],
    times: NDArray[np.float64],
    censoring: StepFunction,
) -> WeightedMean:
    """IBS = integral of BS(t) over [t_1, t_K] / (t_K - t_1), trapezoidal rule (lower is better).

    Matches scikit-survival's ``integrated_brier_score`` on the same grid. Because the
    trapezoid is linear, IBS is the mean over patients of each patient's integrated term,
    which is what makes it a :class:`~steph.metrics.statistic.WeightedMean`.

    Args: as :func:`brier_contributions`; ``times`` must hold at least two distinct values.
    """
    times = np.asarray(times, dtype=np.float64)
    n = np.asarray(time).size
    if times.size < 2 or times[-1] <= times[0]:
        return WeightedMean(
            np.zeros(n), reason="fewer than two distinct evaluation times (follow-up too short)"
        )
    terms = brier_contributions(time, event, survival, times, censoring)
    return WeightedMean(np.trapezoid(terms, times, axis=1) / (times[-1] - times[0]))
