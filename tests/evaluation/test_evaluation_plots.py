"""The report's figures say what they show: KM number-at-risk tables against lifelines."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import steph.evaluation.plots
from steph.evaluation.fold import DAYS_PER_YEAR
from steph.evaluation.groups import RiskGroups
from steph.evaluation.plots import km_ticks, plot_km
from steph.metrics import logrank_test


def test_doctests() -> None:
    assert doctest.testmod(steph.evaluation.plots).failed == 0


def _groups(seed: int, method: str) -> RiskGroups:
    rng = np.random.default_rng(seed)
    n = 40
    time = rng.integers(30, 6 * 365, n).astype(np.float64)
    time[:3] = DAYS_PER_YEAR * np.array([1.0, 2.0, 2.0])  # events and censoring exactly on a tick
    event = rng.random(n) < 0.6
    high = rng.random(n) < 0.5
    return RiskGroups(method, time, event, high, [], logrank_test(time, event, high))


def _lifelines_at_risk(time_years: np.ndarray, event: np.ndarray, ticks: np.ndarray) -> list[int]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts

    fig, ax = plt.subplots()
    try:
        kmf = KaplanMeierFitter().fit(time_years, event, label="g")
        kmf.plot_survival_function(ax=ax)
        add_at_risk_counts(kmf, ax=ax, rows_to_show=["At risk"], xticks=list(ticks))
        labels = [t.get_text() for t in fig.axes[-1].get_xticklabels()]  # the table's own axis
    finally:
        plt.close(fig)
    return [int(label.split()[-1]) for label in labels]


def test_km_number_at_risk_equals_lifelines(tmp_path: Path) -> None:
    groups = [_groups(0, "steph"), _groups(1, "cancer-specific")]
    drawn = plot_km(tmp_path / "km.png", "BRCA", groups)
    assert Image.open(drawn.path).size[1] > 400
    horizon = max(float(g.time.max()) for g in groups) / DAYS_PER_YEAR
    assert drawn.ticks == tuple(km_ticks(horizon)) and drawn.ticks[0] == 0.0
    ticks = np.array(drawn.ticks)
    for g in groups:
        low, high = drawn.at_risk[g.method]
        for rows, mask in ((low, ~g.high), (high, g.high)):
            years = g.time[mask] / DAYS_PER_YEAR
            assert list(rows) == _lifelines_at_risk(years, g.event[mask], ticks)
            assert rows[0] == mask.sum()


@pytest.mark.parametrize(("horizon", "step"), [(0.8, 0.25), (5.2, 1.0), (12.0, 2.0), (30.0, 5.0)])
def test_km_ticks_cover_the_follow_up(horizon: float, step: float) -> None:
    ticks = km_ticks(horizon)
    assert ticks[0] == 0.0 and ticks[-1] <= horizon < ticks[-1] + step
    assert np.allclose(np.diff(ticks), step)


def _fold(method: str, fold: int, n: int, ibs: tuple[float, float, float]):  # type: ignore[no-untyped-def]
    from steph.evaluation.fold import FoldResult, MetricResult
    from steph.evaluation.inputs import FoldPredictions

    zeros = np.zeros(n)
    predictions = FoldPredictions(
        "BRCA",
        method,
        fold,
        Path("p.csv"),
        tuple(map(str, range(n))),
        zeros + 1,
        zeros > 0,
        zeros,
        zeros[:, None],
    )
    return FoldResult(predictions, {"ibs": MetricResult(*ibs)}, "training set")


def test_ibs_note_only_where_the_bootstrap_bound_is_not_sensible() -> None:
    from steph.evaluation.html_report import ibs_instability_note

    stable = [
        _fold("steph", 0, 60, (0.18, 0.15, 0.22)),
        _fold("steph", 1, 60, (0.2, 0.17, float("nan"))),  # no bootstrap
        _fold("steph", 2, 50, (0.25, 0.2, 0.36)),  # a poor model with an ordinary interval
    ]
    assert ibs_instability_note(stable) == ""
    # the reported case: an 18-patient fold whose upper bound reached 1.31
    note = ibs_instability_note([*stable, _fold("cancer-specific", 2, 18, (0.21, 0.08, 1.31))])
    assert (
        "cancer-specific fold 2 (18 patients: IBS 0.21, upper bound 1.31)" in note
        and "steph fold" not in note
    )
    assert "pass 1" in note and "1 / G(t)" in note
    milder = ibs_instability_note([_fold("steph", 3, 18, (0.15, 0.1, 0.4))])
    assert "upper bound 0.40" in milder and "pass 1" not in milder
