"""Low- and high-risk groups pooled over folds, their Kaplan-Meier curves and log-rank test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..metrics import LogRank, StepFunction, kaplan_meier, logrank_test
from .fold import FoldResult


@dataclass(frozen=True)
class RiskGroups:
    """Test patients of every fold of one method, split at each fold's cut-off."""

    method: str
    time: NDArray[np.float64]
    event: NDArray[np.bool_]
    high: NDArray[np.bool_]
    """True for patients whose risk is above their fold's cut-off."""
    test_median_folds: list[int]
    """Folds without a recorded training median, split at their test median instead."""
    logrank: LogRank

    def curve(self, high: bool) -> StepFunction:
        mask = self.high == high
        return kaplan_meier(self.time[mask], self.event[mask])


def risk_groups(method: str, results: list[FoldResult]) -> RiskGroups:
    """Split each fold at the training median risk (metrics.json ``train_median_risk``).

    A fold whose metrics.json lacks it falls back to the median risk of its own test patients
    (listed in ``test_median_folds`` so plots can say so). Patients with risk above the
    cut-off form the high-risk group; the groups are pooled over folds (each test patient
    appears in exactly one fold) and compared with the log-rank test.
    """
    times, events, high, fallback = [], [], [], []
    for result in sorted(results, key=lambda r: r.predictions.fold):
        p = result.predictions
        cut = p.train_median_risk
        if cut is None:
            cut = float(np.median(p.risk))
            fallback.append(p.fold)
        times.append(p.time)
        events.append(p.event)
        high.append(p.risk > cut)
    t, e, h = np.concatenate(times), np.concatenate(events), np.concatenate(high)
    return RiskGroups(method, t, e, h, fallback, logrank_test(t, e, h))
