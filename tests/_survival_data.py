"""Random survival data with tied times, tied risks and censoring, for the metric tests."""

from __future__ import annotations

import numpy as np


def survival_data(rng: np.random.Generator, n: int, *, event_rate: float = 0.45, grid: int = 40):
    """Times on a coarse grid (many ties), censoring, risks rounded to one decimal (tied risks)."""
    time = rng.integers(1, grid, n).astype(np.float64) * 60.0
    event = rng.random(n) < event_rate
    risk = np.round(rng.normal(size=n) - time / 2000.0, 1)
    return time, event, risk


def train_test(seed: int, n_train: int = 150, n_test: int = 60):
    rng = np.random.default_rng(seed)
    train_t, train_e, _ = survival_data(rng, n_train)
    # the training set's last time must be an event or beyond the test times for sksurv to be defined
    train_t[0], train_e[0] = 100 * 60.0, True
    test_t, test_e, risk = survival_data(rng, n_test)
    return (train_t, train_e), (test_t, test_e, risk)
