"""Survival metrics as weighted sums over patients, so one formula serves the estimate and the bootstrap.

Harrell's and Uno's C-index and the cumulative/dynamic AUC are ratios of sums over pairs of
patients; the integrated Brier score is a mean over patients. A bootstrap resample is a vector
of multiplicities m (how often each patient was drawn; m = 1 is the original sample), and for
a pair statistic with pair matrices N and D

    value(m) = sum_ij m_i m_j N_ij / sum_ij m_i m_j D_ij

which for R resamples at once is one ``[R, n] @ [n, n]`` product. A patient drawn twice is
never paired with itself: its copies have the same time and event, and such pairs have
N_ij = D_ij = 0 in every metric here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray


class Statistic(Protocol):
    """A metric that can be evaluated on the sample and on bootstrap multiplicities."""

    @property
    def reason(self) -> str:
        """Why the metric is undefined on the full sample ("" when it is defined)."""

    def estimate(self) -> float:
        """The value on the full sample (NaN when undefined)."""

    def resample(self, counts: NDArray[np.float64]) -> NDArray[np.float64]:
        """Values for multiplicities ``counts`` of shape ``[R, n]`` (NaN where undefined)."""


def _ratio(num: NDArray[np.float64], den: NDArray[np.float64]) -> NDArray[np.float64]:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


@dataclass(frozen=True)
class PairRatio:
    """sum_ij m_i m_j N_ij / sum_ij m_i m_j D_ij (see the module docstring)."""

    numerator: NDArray[np.float64]
    """N, shape ``[n, n]``."""
    denominator: NDArray[np.float64]
    """D, shape ``[n, n]`` (D_ij > 0 exactly for the pairs that count)."""
    reason: str = ""

    def estimate(self) -> float:
        den = float(self.denominator.sum())
        return float(self.numerator.sum()) / den if den > 0 else float("nan")

    def resample(self, counts: NDArray[np.float64]) -> NDArray[np.float64]:
        n = counts.shape[1]
        both = counts @ np.concatenate([self.numerator, self.denominator], axis=1)  # one [R, n] @ [n, 2n]
        num = (both[:, :n] * counts).sum(axis=1)
        den = (both[:, n:] * counts).sum(axis=1)
        return _ratio(num, den)


@dataclass(frozen=True)
class WeightedMean:
    """sum_i m_i b_i / sum_i m_i, a per-patient average (the Brier score family)."""

    contributions: NDArray[np.float64]
    """b, shape ``[n]``."""
    reason: str = ""

    def estimate(self) -> float:
        return float(self.contributions.mean()) if not self.reason else float("nan")

    def resample(self, counts: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.reason:
            return np.full(counts.shape[0], np.nan)
        return _ratio(counts @ self.contributions, counts.sum(axis=1))


def comparable_pairs(time: ArrayLike, event: ArrayLike) -> NDArray[np.bool_]:
    """Harrell's comparable pairs (scikit-survival's ``concordance_index_censored`` rules).

    (i, j) is comparable when i has an event and t_i < t_j, or t_i = t_j with i an event and
    j censored; two events at the same time are not comparable. Shape ``[n, n]``, row = i.
    """
    t = np.asarray(time, dtype=np.float64).ravel()
    e = np.asarray(event).astype(bool).ravel()
    later = t[:, None] < t[None, :]
    tied_censored = (t[:, None] == t[None, :]) & ~e[None, :]
    pairs: NDArray[np.bool_] = e[:, None] & (later | tied_censored)
    return pairs


def concordance_scores(risk: ArrayLike, *, tied_tol: float = 1e-8) -> NDArray[np.float64]:
    """s_ij = 1 if r_i > r_j, 0.5 if |r_i - r_j| <= tied_tol, else 0; shape ``[n, n]``."""
    r = np.asarray(risk, dtype=np.float64).ravel()
    diff = r[:, None] - r[None, :]
    tied = np.abs(diff) <= tied_tol
    return np.where(tied, 0.5, (diff > 0).astype(np.float64))
