"""The generative model of steph.synthetic.cohort, checked against independent estimators (lifelines)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steph.errors import ConfigError
from steph.metrics.harrell import harrell_c
from steph.synthetic import TCGA_CANCERS, CancerSpec, CohortSpec, draw_cohort, standard_spec
from steph.synthetic.cohort import calibrate_dropout, cancer_rng, coefficients
from steph.synthetic.tables import plain_spec


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


def _four_cancers(n: int, **options: object) -> CohortSpec:
    sharing = {"ALPHA": 1.0, "BETA": 1.0, "GAMMA": 0.4, "DELTA": 0.0}
    cancers = tuple(CancerSpec(name=c, n_patients=n, censoring=0.5, sharing=s) for c, s in sharing.items())
    return CohortSpec(cancers=cancers, phenotypes=8, sharing=0.0, seed=5, **options)  # type: ignore[arg-type]


def test_shared_prevalence_gives_every_cancer_one_mix_distribution() -> None:
    """Same p for every cancer, each cancer's own patients around it; off, each cancer keeps the
    prevalence it drew before the option existed (its first Dirichlet(2 * 1_P) draw)."""
    own = draw_cohort(_four_cancers(50))
    shared = draw_cohort(_four_cancers(50, shared_prevalence=True))
    for name, cohort in own.items():
        first = cancer_rng(5, name, 0).dirichlet(np.full(8, 2.0))
        np.testing.assert_array_equal(cohort.prevalence, first)
        np.testing.assert_array_equal(shared[name].prevalence, shared["ALPHA"].prevalence)
        np.testing.assert_array_equal(shared[name].coefficients, cohort.coefficients)
    assert not np.allclose(own["ALPHA"].prevalence, own["BETA"].prevalence)
    # pooled over many patients, every cancer's mean mix is the one prevalence
    big = draw_cohort(_four_cancers(4000, shared_prevalence=True))
    for cohort in big.values():
        np.testing.assert_allclose(cohort.proportions.mean(axis=0), cohort.prevalence, atol=0.01)


def test_exact_sharing_makes_the_true_risks_correlate_by_the_design() -> None:
    """corr(beta_a . pi, beta_b . pi) over patients = sqrt(s_a s_b): checked on 40,000 drawn
    mixes (Monte Carlo sd of a correlation about 0.005), not with the covariance the generator uses."""
    spec = _four_cancers(40_000, shared_prevalence=True, exact_sharing=True)
    cohorts = draw_cohort(spec)
    mixes = cohorts["ALPHA"].proportions
    names = list(cohorts)
    risks = np.array([mixes @ cohorts[c].coefficients for c in names])
    measured = np.corrcoef(risks)
    sharing = np.array([c.sharing for c in spec.cancers], dtype=float)
    design = np.sqrt(np.outer(sharing, sharing))
    np.fill_diagonal(design, 1.0)
    np.testing.assert_allclose(measured, design, atol=0.02)
    # the random coefficients (default) miss the design by far more than that
    loose = draw_cohort(_four_cancers(40_000, shared_prevalence=True))
    chance = np.corrcoef([mixes @ loose[c].coefficients for c in names])
    assert np.abs(chance - design).max() > 0.1


def test_exact_sharing_needs_a_shared_prevalence_and_enough_phenotypes() -> None:
    with pytest.raises(ConfigError, match="shared_prevalence"):
        _four_cancers(50, exact_sharing=True)
    spec = _four_cancers(50, shared_prevalence=True, exact_sharing=True)
    with pytest.raises(ConfigError, match="phenotypes >= cancers \\+ 2"):
        CohortSpec(cancers=spec.cancers, phenotypes=5, shared_prevalence=True, exact_sharing=True)


def test_the_stored_spec_names_the_new_options_only_when_set() -> None:
    """cohort.json of a default cohort is what it was before the options existed (the demo's stays
    byte-identical and a generated project is still recognised as the same cohort)."""
    assert "shared_prevalence" not in plain_spec(_four_cancers(50))
    assert "exact_sharing" not in plain_spec(_four_cancers(50))
    stored = plain_spec(_four_cancers(50, shared_prevalence=True, exact_sharing=True))
    assert stored["shared_prevalence"] is True and stored["exact_sharing"] is True
