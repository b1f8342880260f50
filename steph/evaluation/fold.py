"""All metrics of one method on one fold, each with a seeded bootstrap interval.

Metric names (the ``metric`` column of summary.csv): ``c_index`` (Harrell, raw days),
``c_index_uno`` (Uno, IPCW, no truncation), ``auc_<y>y`` (cumulative/dynamic AUC at y years,
risk 1 - S(t)), ``ibs`` (integrated Brier score, lower is better).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..metrics import (
    Statistic,
    censoring_survival,
    cumulative_dynamic_auc,
    harrell_statistic,
    ibs_times,
    integrated_brier_score,
    percentile_interval,
    resample_counts,
    stable_seed,
    uno_statistic,
)
from .inputs import FoldPredictions, TrainingSurvival

DAYS_PER_YEAR = 365.25


def auc_name(years: float) -> str:
    """``auc_1y`` for 1.0, ``auc_2.5y`` for 2.5."""
    return f"auc_{years:g}y"


def metric_names(auc_years: list[float]) -> list[str]:
    return ["c_index", "c_index_uno", *(auc_name(y) for y in auc_years), "ibs"]


def survival_at(
    hazards: NDArray[np.float64], times: NDArray[np.float64], bin_width: float
) -> NDArray[np.float64]:
    """S_i(t) from per-bin hazards as a step function that drops at the end of each bin.

    Bin j covers [j w, (j + 1) w); S_j = prod_{k <= j} (1 - h_k) is the probability of
    surviving bin j, so

        S(t) = prod_{k : (k + 1) w <= t} (1 - h_k) = S_{floor(t / w) - 1}    (S_{-1} = 1)

    and S(t) = S_{T-1} once every bin has passed. Shape ``[n, K]`` for ``times`` of shape (K,).

    >>> survival_at(np.array([[0.5, 0.5, 0.5]]), np.array([0.0, 364.0, 365.0, 800.0, 5000.0]), 365.0)
    array([[1.   , 1.   , 0.5  , 0.25 , 0.125]])
    """
    surv = np.cumprod(1.0 - hazards, axis=1)
    padded = np.concatenate([np.ones((surv.shape[0], 1)), surv], axis=1)
    passed = np.clip(np.floor(np.asarray(times, dtype=np.float64) / bin_width).astype(int), 0, surv.shape[1])
    return padded[:, passed]


@dataclass
class MetricResult:
    """A metric's value and interval on one fold; NaN value with a ``reason`` when undefined."""

    value: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    reason: str = ""
    replicates: NDArray[np.float64] = field(default_factory=lambda: np.empty(0), repr=False)
    """Bootstrap replicates (paired across methods of the same fold), kept for cross-fold intervals."""

    @property
    def defined(self) -> bool:
        return not math.isnan(self.value)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "value": _num(self.value),
            "ci_low": _num(self.ci_low),
            "ci_high": _num(self.ci_high),
        }
        if self.reason:
            out["undefined"] = self.reason
        return out


def _num(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass
class FoldResult:
    """Metrics of one (target, method, fold)."""

    predictions: FoldPredictions
    metrics: dict[str, MetricResult]
    censoring_source: str

    @property
    def n(self) -> int:
        return len(self.predictions.ids)

    @property
    def events(self) -> int:
        return int(self.predictions.event.sum())

    def to_dict(self) -> dict[str, Any]:
        p = self.predictions
        return {
            "target": p.target,
            "method": p.method,
            "fold": p.fold,
            "n": self.n,
            "events": self.events,
            "censoring_from": self.censoring_source,
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
        }


def fold_statistics(
    preds: FoldPredictions, training: TrainingSurvival, *, auc_years: list[float], bin_width: float
) -> dict[str, Statistic]:
    """The metrics of one fold as bootstrap-ready statistics (see :mod:`steph.metrics.statistic`)."""
    t, e = preds.time, preds.event
    g = censoring_survival(training.time, training.event)
    stats: dict[str, Statistic] = {
        "c_index": harrell_statistic(t, e, preds.risk),
        "c_index_uno": uno_statistic(t, e, preds.risk, g),
    }
    for years in auc_years:
        horizon = years * DAYS_PER_YEAR
        risk_at = 1.0 - survival_at(preds.hazards, np.array([horizon]), bin_width)[:, 0]
        stats[auc_name(years)] = cumulative_dynamic_auc(t, e, risk_at, horizon, g)
    grid = ibs_times(t)
    stats["ibs"] = integrated_brier_score(t, e, survival_at(preds.hazards, grid, bin_width), grid, g)
    return stats


def evaluate_fold(
    preds: FoldPredictions,
    training: TrainingSurvival,
    *,
    auc_years: list[float],
    bin_width: float,
    resamples: int,
    confidence: float,
    seed: int,
) -> FoldResult:
    """Every metric of one fold with a percentile bootstrap interval.

    The resamples are drawn from ``stable_seed(seed, target, fold)`` over the patients in id
    order, so every method evaluated on the same test patients gets the same resamples.
    """
    counts = resample_counts(len(preds.ids), resamples, stable_seed(seed, preds.target, preds.fold))
    results: dict[str, MetricResult] = {}
    for name, stat in fold_statistics(preds, training, auc_years=auc_years, bin_width=bin_width).items():
        value = stat.estimate()
        if math.isnan(value):
            results[name] = MetricResult(math.nan, reason=stat.reason or "undefined")
            continue
        reps = stat.resample(counts) if resamples else np.empty(0)
        interval = percentile_interval(reps, confidence)
        results[name] = MetricResult(value, interval.low, interval.high, replicates=reps)
    return FoldResult(preds, results, training.source)
