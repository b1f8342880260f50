"""Seeded nonparametric bootstrap: resample multiplicities and percentile intervals."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


def resample_counts(n: int, resamples: int, seed: int | list[int]) -> NDArray[np.float64]:
    """Multiplicities of ``resamples`` bootstrap samples of ``n`` patients, shape ``[R, n]``.

    Row r counts how often each patient was drawn (n draws with replacement); rows sum to n.
    The same ``seed`` and ``n`` always give the same rows, so methods evaluated on the same
    patients (in the same order) are resampled identically: a paired bootstrap.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n), dtype=np.float64)
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return counts


def stable_seed(*parts: int | str) -> list[int]:
    """A seed sequence from ints and strings that does not depend on Python's hash salt."""
    return [p if isinstance(p, int) else zlib.crc32(p.encode("utf-8")) for p in parts]


@dataclass(frozen=True)
class Interval:
    """Percentile interval of the defined bootstrap replicates."""

    low: float
    high: float
    valid: int
    """Replicates in which the statistic was defined (the others are left out)."""


def percentile_interval(replicates: NDArray[np.float64], confidence: float) -> Interval:
    """The (1 - confidence)/2 and (1 + confidence)/2 percentiles of the non-NaN replicates."""
    ok = replicates[~np.isnan(replicates)]
    if ok.size == 0:
        return Interval(float("nan"), float("nan"), 0)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(ok, [alpha, 1.0 - alpha])
    return Interval(float(low), float(high), int(ok.size))
