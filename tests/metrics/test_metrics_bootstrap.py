"""Bootstrap multiplicities, percentile intervals, and the log-rank test against lifelines."""

from __future__ import annotations

import numpy as np
import pytest
from _survival_data import train_test
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test as lifelines_logrank
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from steph.metrics import (
    censoring_survival,
    harrell_statistic,
    ibs_times,
    kaplan_meier,
    logrank_test,
    percentile_interval,
    resample_counts,
    stable_seed,
    uno_statistic,
)
from steph.metrics import (
    cumulative_dynamic_auc as our_auc,
)
from steph.metrics import (
    integrated_brier_score as our_ibs,
)


def _expand(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(counts.size), counts.astype(int))


def test_resample_counts_are_seeded_and_sum_to_n() -> None:
    a = resample_counts(30, 50, stable_seed(42, "BRCA", 0))
    b = resample_counts(30, 50, stable_seed(42, "BRCA", 0))
    c = resample_counts(30, 50, stable_seed(42, "BRCA", 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(a.sum(axis=1) == 30)
    assert stable_seed("BRCA") == stable_seed("BRCA") != stable_seed("BLCA")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_replicate_equals_the_metric_on_the_resampled_patients(seed: int) -> None:
    """A replicate computed from multiplicities = sksurv on the explicitly duplicated sample."""
    (tr_t, tr_e), (t, e, risk) = train_test(seed)
    y_train = Surv.from_arrays(tr_e, tr_t)
    g = censoring_survival(tr_t, tr_e)
    times = ibs_times(t)
    surv = np.exp(-np.outer(np.exp(risk), times) / 3000.0)
    counts = resample_counts(t.size, 8, seed)
    harrell = harrell_statistic(t, e, risk).resample(counts)
    uno = uno_statistic(t, e, risk, g).resample(counts)
    auc = our_auc(t, e, risk, 900.0, g).resample(counts)
    ibs = our_ibs(t, e, surv, times, g).resample(counts)
    for r in range(counts.shape[0]):
        idx = _expand(counts[r])
        y = Surv.from_arrays(e[idx], t[idx])
        assert harrell[r] == pytest.approx(
            concordance_index_censored(e[idx], t[idx], risk[idx])[0], abs=1e-12
        )
        assert uno[r] == pytest.approx(concordance_index_ipcw(y_train, y, risk[idx])[0], abs=1e-12)
        assert auc[r] == pytest.approx(
            cumulative_dynamic_auc(y_train, y, risk[idx], [900.0])[0][0], abs=1e-12
        )
        if times[-1] < t[idx].max() and times[0] >= t[idx].min():  # sksurv's own range check
            assert ibs[r] == pytest.approx(integrated_brier_score(y_train, y, surv[idx], times), abs=1e-12)


def test_percentile_interval_ignores_undefined_replicates() -> None:
    reps = np.array([np.nan, *np.linspace(0.0, 1.0, 101), np.nan])
    iv = percentile_interval(reps, 0.9)
    assert iv.valid == 101
    assert iv.low == pytest.approx(0.05) and iv.high == pytest.approx(0.95)
    empty = percentile_interval(np.full(5, np.nan), 0.95)
    assert empty.valid == 0 and np.isnan(empty.low)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_logrank_matches_lifelines(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 80
    t = rng.integers(1, 30, n).astype(float) * 30
    e = rng.random(n) < 0.5
    group = rng.random(n) < 0.4
    t[group] *= 0.7  # a real difference, still with ties
    ours = logrank_test(t, e, group)
    ref = lifelines_logrank(t[~group], t[group], e[~group], e[group])
    assert ours.statistic == pytest.approx(ref.test_statistic, rel=1e-10)
    assert ours.p_value == pytest.approx(ref.p_value, rel=1e-8)


def test_logrank_undefined_cases() -> None:
    t = np.array([1.0, 2, 3, 4])
    assert "empty" in logrank_test(t, [1, 1, 1, 1], [0, 0, 0, 0]).reason
    assert logrank_test(t, [0, 0, 0, 0], [0, 1, 0, 1]).reason == "no events"


def test_kaplan_meier_matches_lifelines() -> None:
    (t, e), _ = train_test(3)
    kmf = KaplanMeierFitter().fit(t, e)
    probe = np.linspace(0, t.max(), 50)
    np.testing.assert_allclose(
        kaplan_meier(t, e)(probe), kmf.survival_function_at_times(probe).to_numpy(), atol=1e-12
    )
