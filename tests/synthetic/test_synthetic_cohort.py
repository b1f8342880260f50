"""The generative model of steph.synthetic.cohort, checked against independent estimators (lifelines)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steph.errors import ConfigError
from steph.metrics.harrell import harrell_c
from steph.synthetic import TCGA_CANCERS, CancerSpec, CohortSpec, draw_cohort, standard_spec
from steph.synthetic.cohort import calibrate_dropout, coefficients


def one_cancer(n: int = 2000, **options: object) -> CohortSpec:
    censoring = float(options.pop("censoring", 0.5))  # type: ignore[arg-type]
    median = float(options.pop("median_days", 1500.0))  # type: ignore[arg-type]
    return CohortSpec(
        cancers=(CancerSpec(name="BRCA", n_patients=n, censoring=censoring, median_days=median),), **options
    )  # type: ignore[arg-type]


def test_true_risk_is_recovered_by_a_cox_model() -> None:
    """Weibull PH with hazard multiplier exp(eta): a Cox fit of (t, e) on eta has coefficient 1."""
    lifelines = pytest.importorskip("lifelines")
    import pandas as pd

    cohort = draw_cohort(one_cancer(3000, censoring=0.5, effect_sd=1.0))["BRCA"]
    frame = pd.DataFrame({"t": cohort.time, "e": cohort.event, "eta": cohort.risk})
    fit = lifelines.CoxPHFitter().fit(frame, duration_col="t", event_col="e")
    assert fit.params_["eta"] == pytest.approx(1.0, abs=0.1)
    assert 0.7 < cohort.oracle_c_index < 0.8  # sd(eta) = 1 gives C of about 0.75


def test_median_survival_matches_the_spec_without_effects() -> None:
    lifelines = pytest.importorskip("lifelines")
    cohort = draw_cohort(one_cancer(4000, censoring=0.3, median_days=2000.0, effect_sd=0.0))["BRCA"]
    km = lifelines.KaplanMeierFitter().fit(cohort.time, cohort.event)
    assert km.median_survival_time_ == pytest.approx(2000.0, rel=0.06)
    assert cohort.oracle_c_index == pytest.approx(0.5)  # a constant risk ranks nobody


@pytest.mark.parametrize("target", [0.1, 0.3, 0.7, 0.9])
def test_censoring_rate_hits_the_target(target: float) -> None:
    cohort = draw_cohort(one_cancer(500, censoring=target, median_days=800.0))["BRCA"]
    assert abs(cohort.censoring_rate - target) <= 1.0 / 500 + 1e-9


def test_censoring_is_administrative_then_random() -> None:
    spec = one_cancer(800, censoring=0.6, median_days=3000.0, follow_up_days=3650.0)
    cohort = draw_cohort(spec)["BRCA"]
    assert cohort.time.max() <= 3650
    assert cohort.time.min() >= 1
    assert cohort.dropout_rate > 0  # administrative censoring alone does not reach 60%


def test_calibration_refuses_an_impossible_rate() -> None:
    times = np.full(100, 10_000.0)  # everybody outlives the follow-up
    with pytest.raises(ConfigError, match="administrative censoring"):
        calibrate_dropout(times, np.ones(100), 5000.0, 0.5)


def test_sharing_mixes_shared_and_own_coefficients() -> None:
    """beta_c(s) = sqrt(s) beta_c(1) + sqrt(1 - s) beta_c(0): the documented decomposition."""
    base = standard_spec(
        cancers=TCGA_CANCERS[:4], target="BRCA", target_patients=20, source_patients=(20, 20)
    )

    def betas(s: float) -> dict[str, np.ndarray]:
        return coefficients(CohortSpec(cancers=base.cancers, sharing=s, seed=base.seed))

    full, none, half = betas(1.0), betas(0.0), betas(0.5)
    first = next(iter(full.values()))
    for name in full:
        np.testing.assert_allclose(full[name], first)  # one rule for every cancer
        np.testing.assert_allclose(half[name], math.sqrt(0.5) * full[name] + math.sqrt(0.5) * none[name])
    assert not np.allclose(none["BRCA"], none["BLCA"])


def test_cohort_is_deterministic_and_independent_of_other_cancers() -> None:
    small = standard_spec(cancers=("BRCA", "BLCA"), target_patients=30, source_patients=(40, 40), seed=3)
    again = draw_cohort(small)
    first = draw_cohort(small)
    np.testing.assert_array_equal(first["BRCA"].time, again["BRCA"].time)
    alone = CohortSpec(cancers=(small.cancers[1],), seed=3, sharing=small.sharing)
    # BRCA's draw does not depend on which other cancers are in the cohort (only via sharing of beta)
    np.testing.assert_array_equal(draw_cohort(alone)["BLCA"].proportions, first["BLCA"].proportions)


def test_standard_spec_has_a_data_poor_target() -> None:
    spec = standard_spec(target="tcga_brca", target_patients=150, source_patients=(300, 500))
    sizes = {c.name: c.n_patients for c in spec.cancers}
    assert spec.names == list(TCGA_CANCERS)
    assert sizes.pop("BRCA") == 150
    assert min(sizes.values()) == 300 and max(sizes.values()) == 500


def test_oracle_c_index_is_harrell_of_the_true_risk() -> None:
    cohort = draw_cohort(one_cancer(300))["BRCA"]
    assert cohort.oracle_c_index == harrell_c(cohort.time, cohort.event, cohort.risk).value


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sharing": 1.5}, "sharing"),
        ({"phenotypes": 1}, "phenotypes"),
        ({"folds": 1}, "folds"),
    ],
)
def test_invalid_specs_are_config_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        one_cancer(100, **options)


def test_invalid_cancer_specs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="censoring"):
        CancerSpec(name="BRCA", n_patients=50, censoring=0.99)
    with pytest.raises(ConfigError, match="duplicate"):
        CohortSpec(
            cancers=(CancerSpec(name="BRCA", n_patients=50), CancerSpec(name="tcga_brca", n_patients=50))
        )
