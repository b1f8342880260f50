"""Every metric against an independent implementation (scikit-survival, torchsurv, lifelines).

Data are random with tied times, tied risks and censoring; the censoring distribution comes from
a separate training set, as in evaluation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _survival_data import train_test
from sksurv.metrics import (
    brier_score,
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.nonparametric import CensoringDistributionEstimator, kaplan_meier_estimator
from sksurv.util import Surv

from steph.metrics import (
    brier_contributions,
    censoring_survival,
    harrell_c,
    harrell_statistic,
    ibs_times,
    kaplan_meier,
    uno_statistic,
)
from steph.metrics import cumulative_dynamic_auc as our_auc
from steph.metrics import integrated_brier_score as our_ibs

SEEDS = [0, 1, 2, 3, 4]


@pytest.mark.parametrize("seed", SEEDS)
def test_harrell_pair_form_matches_sksurv_and_loop(seed: int) -> None:
    _, (t, e, risk) = train_test(seed)
    expected = concordance_index_censored(e, t, risk)[0]
    assert harrell_statistic(t, e, risk).estimate() == pytest.approx(expected, abs=1e-12)
    assert harrell_c(t, e, risk).value == pytest.approx(expected, abs=1e-12)
    from torchsurv.metrics.cindex import ConcordanceIndex

    ts = ConcordanceIndex()(
        torch.tensor(risk, dtype=torch.float32), torch.tensor(e), torch.tensor(t, dtype=torch.float32)
    )
    assert harrell_statistic(t, e, risk).estimate() == pytest.approx(float(ts), abs=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_kaplan_meier_and_censoring_distribution_match_sksurv(seed: int) -> None:
    (t, e), _ = train_test(seed)
    times, surv = kaplan_meier_estimator(e, t)
    np.testing.assert_allclose(kaplan_meier(t, e)(times), surv, atol=1e-12)
    cens = CensoringDistributionEstimator().fit(Surv.from_arrays(e, t))
    probe = np.linspace(0, t.max(), 97)
    np.testing.assert_allclose(censoring_survival(t, e)(probe), cens.predict_proba(probe), atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_uno_matches_sksurv_and_torchsurv(seed: int) -> None:
    (tr_t, tr_e), (t, e, risk) = train_test(seed)
    g = censoring_survival(tr_t, tr_e)
    expected = concordance_index_ipcw(Surv.from_arrays(tr_e, tr_t), Surv.from_arrays(e, t), risk)[0]
    assert uno_statistic(t, e, risk, g).estimate() == pytest.approx(expected, abs=1e-12)
    tau = float(np.median(t))
    expected_tau = concordance_index_ipcw(
        Surv.from_arrays(tr_e, tr_t), Surv.from_arrays(e, t), risk, tau=tau
    )[0]
    assert uno_statistic(t, e, risk, g, tau=tau).estimate() == pytest.approx(expected_tau, abs=1e-12)

    from torchsurv.metrics.cindex import ConcordanceIndex
    from torchsurv.stats.ipcw import get_ipcw

    as32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731 - torchsurv wants float32
    weight = get_ipcw(torch.tensor(tr_e), as32(tr_t), as32(t))
    ts = ConcordanceIndex()(as32(risk), torch.tensor(e), as32(t), weight=weight)
    assert uno_statistic(t, e, risk, g).estimate() == pytest.approx(float(ts), abs=1e-5)


def test_uno_scores_events_beyond_training_follow_up() -> None:
    """sksurv raises when a test event is later than every training time; we hold G constant."""
    (tr_t, tr_e), (t, e, risk) = train_test(0)
    t = t.copy()
    t[np.flatnonzero(e)[0]] = tr_t.max() + 500.0
    with pytest.raises(ValueError):
        concordance_index_ipcw(Surv.from_arrays(tr_e, tr_t), Surv.from_arrays(e, t), risk)
    value = uno_statistic(t, e, risk, censoring_survival(tr_t, tr_e)).estimate()
    assert 0.0 <= value <= 1.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("horizon", [365.0, 1095.0, 1826.25])
def test_auc_matches_sksurv(seed: int, horizon: float) -> None:
    (tr_t, tr_e), (t, e, _risk) = train_test(seed)
    rng = np.random.default_rng(seed + 100)
    risk_at = np.round(rng.random(t.size), 2)  # a time-specific risk with ties
    expected = cumulative_dynamic_auc(
        Surv.from_arrays(tr_e, tr_t), Surv.from_arrays(e, t), risk_at, [horizon]
    )
    ours = our_auc(t, e, risk_at, horizon, censoring_survival(tr_t, tr_e))
    assert ours.estimate() == pytest.approx(expected[0][0], abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_brier_and_ibs_match_sksurv(seed: int) -> None:
    (tr_t, tr_e), (t, e, _) = train_test(seed)
    times = ibs_times(t)
    rng = np.random.default_rng(seed)
    surv = np.sort(rng.random((t.size, times.size)), axis=1)[:, ::-1]  # decreasing curves
    y_train, y_test = Surv.from_arrays(tr_e, tr_t), Surv.from_arrays(e, t)
    g = censoring_survival(tr_t, tr_e)
    _, expected_bs = brier_score(y_train, y_test, surv, times)
    np.testing.assert_allclose(
        brier_contributions(t, e, surv, times, g).mean(axis=0), expected_bs, atol=1e-12
    )
    expected = integrated_brier_score(y_train, y_test, surv, times)
    assert our_ibs(t, e, surv, times, g).estimate() == pytest.approx(expected, abs=1e-12)


def test_ibs_grid_lies_inside_follow_up() -> None:
    t = np.array([10.0, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    grid = ibs_times(t)
    assert grid[0] >= t.min() and grid[-1] < t.max() and grid.size == 100


def test_all_censored_fold_is_undefined_with_reason() -> None:
    t = np.array([100.0, 200, 300, 400])
    e = np.zeros(4, dtype=bool)
    risk = np.array([0.1, 0.4, 0.2, 0.3])
    g = censoring_survival(t, e)
    for stat in (harrell_statistic(t, e, risk), uno_statistic(t, e, risk, g), our_auc(t, e, risk, 150.0, g)):
        assert np.isnan(stat.estimate())
        assert stat.reason
    assert "censored" in harrell_statistic(t, e, risk).reason
    assert harrell_c(t, e, risk).reason == "no events"


def test_events_only_at_the_last_time_have_no_comparable_pairs() -> None:
    t = np.array([100.0, 200, 300, 300])
    e = np.array([False, False, True, True])
    stat = harrell_statistic(t, e, np.array([0.1, 0.2, 0.3, 0.4]))
    assert np.isnan(stat.estimate()) and "comparable" in stat.reason


def test_auc_reasons_for_missing_cases_and_controls() -> None:
    t = np.array([100.0, 200, 300, 400])
    e = np.array([True, True, False, True])
    g = censoring_survival(t, e)
    assert "no events by" in our_auc(t, e, t, 50.0, g).reason
    assert "beyond" in our_auc(t, e, t, 400.0, g).reason


def test_uno_tau_before_every_event_is_undefined() -> None:
    t = np.array([100.0, 200, 300, 400])
    e = np.array([False, True, True, False])
    stat = uno_statistic(t, e, np.array([0.1, 0.9, 0.5, 0.2]), censoring_survival(t, e), tau=150.0)
    assert np.isnan(stat.estimate()) and "tau" in stat.reason
