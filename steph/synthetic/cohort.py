"""The generative model of a synthetic multi-cancer survival cohort with a known risk.

Every cancer ``c`` is a population of patients whose tissue is a mix of ``P`` phenotypes
(tumour, stroma, lymphocytes, ...). Patient ``i`` has phenotype proportions
``pi_i ~ Dirichlet(a * P * p_c)`` around the cancer's prevalence ``p_c ~ Dirichlet(2 * 1_P)``.
With ``shared_prevalence`` every cancer uses one prevalence ``p ~ Dirichlet(2 * 1_P)`` drawn
from the cohort's seed: the cancers' phenotype mixes then come from one distribution, and two
cancers differ only in their rule, their survival and censoring, and their feature style (the
known-answer transfer test isolates rule sharing this way).

With ``exact_sharing`` (needs ``shared_prevalence``) the drawn directions are first made
orthonormal in the metric of the mixes' covariance
``Sigma = (diag(m) - m m^T) / (A + 1)`` (``m`` the Dirichlet mean, ``A`` its total
concentration): Gram-Schmidt over ``b_shared`` then each cancer's ``b_c`` in the cohort's
order, with ``<x, y> = x^T Sigma y``. Then ``corr(beta_c . pi, beta_c' . pi) = sqrt(s_c s_c')``
exactly over the population of patients, where random draws of ``P`` coefficients would give it
only in expectation (with ``P`` = 8 the chance correlation of two unrelated rules has an sd of
about 0.35). The construction needs ``len(cancers) + 1 <= P - 1`` directions, and a cancer's
coefficients then depend on the cancers listed before it.
The true log-hazard is linear in the proportions, with coefficients that are partly shared
between cancers and partly cancer-specific:

    beta_c = sqrt(s) * b_shared + sqrt(1 - s) * b_c,      b_shared, b_c ~ N(0, I_P)
    eta_i  = sd_eta * standardise_c(beta_c . pi_i)

so ``corr(beta_c, beta_c') = s`` (the ``sharing`` knob: 1 = one prognostic rule for every
cancer, 0 = unrelated rules). A cancer may set its own ``s_c`` (``CancerSpec.sharing``); two
cancers then correlate by ``sqrt(s_c s_c')`` in expectation. Event times follow a Weibull proportional-hazards model,

    S(t | eta) = exp(-(t / lambda_c)^k * exp(eta)),   lambda_c = m_c / (ln 2)^(1 / k)

(``m_c`` = median survival of a patient with ``eta = 0``), drawn by inversion,
``T = lambda_c * (-ln U * exp(-eta))^(1/k)``. Censoring is administrative at ``follow_up_days``
plus exponential drop-out ``C ~ Exp(rho_c)``, with ``rho_c`` solved by bisection on the drawn
sample so that the censored fraction equals the requested rate. The oracle C-index is Harrell's
C of the true ``eta`` against the observed ``(t, e)``.

Everything is drawn from generators seeded by ``(seed, purpose)`` and ``(seed, cancer name)``,
so a cancer's patients do not change when other cancers are added.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

import numpy as np

from ..errors import ConfigError
from ..layout import check_safe_id, normalize_cancer
from ..metrics.harrell import harrell_c

TCGA_CANCERS: tuple[str, ...] = (
    "BLCA",
    "BRCA",
    "CESC",
    "COADREAD",
    "GBMLGG",
    "HNSC",
    "KIPAN",
    "LIHC",
    "LUNG",
    "SARC",
    "SKCM",
    "STES",
    "UCEC",
)
"""The 13 cancers of UNI2-h-DSS in the reference order (docs/reproduce.md)."""

PHENOTYPES: tuple[str, ...] = (
    "tumour",
    "stroma",
    "lymphocytes",
    "necrosis",
    "mucin",
    "muscle",
    "haemorrhage",
    "fat",
)
"""Names of the tissue phenotypes (the first ``CohortSpec.phenotypes`` are used)."""


@dataclass(frozen=True, kw_only=True)
class CancerSpec:
    """One synthetic cancer cohort."""

    name: str
    """Upper-case TCGA-like abbreviation (BRCA, ...)."""
    n_patients: int
    censoring: float = 0.7
    """Fraction of censored patients (TCGA disease-specific survival is mostly censored)."""
    median_days: float = 1800.0
    """Median event time of a patient with average risk (eta = 0), before censoring."""
    sharing: float | None = None
    """This cancer's own sharing s_c (None = the cohort's ``sharing``): two cancers' coefficients
    then correlate by sqrt(s_c s_c') in expectation (the transferability study's known answer)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", normalize_cancer(self.name))
        if self.sharing is not None and not 0.0 <= self.sharing <= 1.0:
            raise ConfigError(f"cancer {self.name}: sharing must be in [0, 1], got {self.sharing}")
        if self.n_patients < 10:
            raise ConfigError(f"cancer {self.name}: n_patients must be >= 10, got {self.n_patients}")
        if not 0.0 <= self.censoring < 0.95:
            raise ConfigError(f"cancer {self.name}: censoring must be in [0, 0.95), got {self.censoring}")
        if self.median_days <= 0:
            raise ConfigError(f"cancer {self.name}: median_days must be > 0, got {self.median_days}")


@dataclass(frozen=True, kw_only=True)
class FeatureSpec:
    """Patch features written straight to the feature layout (level ``features``)."""

    dim: int = 64
    """Feature dimension D (1536 mimics UNI2-h)."""
    patches: tuple[int, int] = (48, 160)
    """Inclusive range of the number of patches per patient (the clip of a log-normal size)."""
    size_median: float = 0.0
    """If > 0, bag sizes are heavy-tailed like TCGA's: log-normal with this median, clipped to
    ``patches`` (0 = uniform over ``patches``)."""
    size_spread: float = 0.8
    """Standard deviation of log(bag size) when ``size_median`` > 0."""
    noise: float = 1.0
    """Standard deviation of the per-coordinate patch noise around its phenotype prototype."""
    style_sd: float = 0.3
    """Standard deviation of a per-cancer offset added to every patch (domain shift)."""

    def __post_init__(self) -> None:
        lo, hi = self.patches
        if self.dim < 2 or not 1 <= lo <= hi:
            raise ConfigError("features: dim must be >= 2 and patches an increasing pair >= 1")
        if self.noise < 0 or self.style_sd < 0:
            raise ConfigError("features: noise and style_sd must be >= 0")
        if self.size_median < 0 or self.size_spread < 0:
            raise ConfigError("features: size_median and size_spread must be >= 0")


@dataclass(frozen=True, kw_only=True)
class SlideSpec:
    """Pyramidal TIFF slides whose colours and textures encode the phenotypes (level ``slides``)."""

    size_um: float = 1024.0
    """Edge of the square slide in microns (2048 px at 0.5 mpp)."""
    mpp: tuple[float, ...] = (0.5,)
    """Level-0 microns per pixel, cycled over the slides (e.g. (0.5, 0.25) mixes 20x and 40x)."""
    cell_um: float = 128.0
    """Edge of the square cells that carry one phenotype each (a 256 px patch at 0.5 mpp)."""
    tissue_fraction: tuple[float, float] = (0.35, 0.6)
    """Range of the fraction of the slide covered by tissue."""

    def __post_init__(self) -> None:
        if not self.mpp or any(not 0.05 <= m <= 4.0 for m in self.mpp):
            raise ConfigError(f"slides: mpp values must be in [0.05, 4], got {self.mpp}")
        if self.cell_um <= 0 or self.size_um < 4 * self.cell_um:
            raise ConfigError("slides: size_um must be at least 4 cells (cell_um > 0)")
        lo, hi = self.tissue_fraction
        if not 0.05 <= lo <= hi <= 0.9:
            raise ConfigError(
                f"slides: tissue_fraction must be an increasing pair in [0.05, 0.9], got {self.tissue_fraction}"
            )


@dataclass(frozen=True, kw_only=True)
class CohortSpec:
    """A multi-cancer cohort: the cancers, the risk model and how patients look."""

    cancers: tuple[CancerSpec, ...]
    phenotypes: int = 6
    """Number of tissue phenotypes P (at most len(PHENOTYPES))."""
    sharing: float = 0.5
    """Correlation s of the prognostic coefficients between cancers (0 separate, 1 shared)."""
    effect_sd: float = 1.0
    """Standard deviation of the true log-hazard eta within a cancer (strength of the signal)."""
    concentration: float = 1.0
    """Dirichlet concentration per phenotype of a patient's mix (lower = more heterogeneous)."""
    shared_prevalence: bool = False
    """One phenotype prevalence for every cancer instead of one per cancer (module docstring);
    each cancer's patients keep their own random draws around it."""
    exact_sharing: bool = False
    """Coefficients orthonormalised in the mixes' covariance metric, so that two cancers' true
    risks correlate by exactly sqrt(s_c s_c') (module docstring; needs ``shared_prevalence``)."""
    weibull_shape: float = 1.2
    """Weibull shape k of the event times (1 = exponential)."""
    follow_up_days: float = 15 * 365.0
    """Administrative censoring: nobody is followed longer than this."""
    folds: int = 5
    """Number of event-stratified cross-validation folds."""
    second_slide_rate: float = 0.1
    """Fraction of patients with two slides (their bag is the concatenation of both)."""
    seed: int = 0
    features: FeatureSpec = field(default_factory=FeatureSpec)
    slides: SlideSpec = field(default_factory=SlideSpec)

    def __post_init__(self) -> None:
        names = [c.name for c in self.cancers]
        if not names:
            raise ConfigError("a cohort needs at least one cancer")
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate cancers in the cohort spec: {names}")
        if not 2 <= self.phenotypes <= len(PHENOTYPES):
            raise ConfigError(f"phenotypes must be in [2, {len(PHENOTYPES)}], got {self.phenotypes}")
        if not 0.0 <= self.sharing <= 1.0:
            raise ConfigError(f"sharing must be in [0, 1], got {self.sharing}")
        if self.effect_sd < 0 or self.concentration <= 0 or self.weibull_shape <= 0:
            raise ConfigError("effect_sd must be >= 0, concentration and weibull_shape > 0")
        if self.follow_up_days <= 0 or not 0.0 <= self.second_slide_rate <= 1.0:
            raise ConfigError("follow_up_days must be > 0 and second_slide_rate in [0, 1]")
        if self.exact_sharing and not self.shared_prevalence:
            raise ConfigError(
                "exact_sharing needs shared_prevalence: the risks' correlation is exact only over one"
                " distribution of phenotype mixes",
                hint="set shared_prevalence as well",
            )
        if self.exact_sharing and len(self.cancers) + 1 > self.phenotypes - 1:
            raise ConfigError(
                f"exact_sharing needs phenotypes >= cancers + 2 ({len(self.cancers) + 2}), got {self.phenotypes}",
                hint="add phenotypes or use fewer cancers",
            )
        if self.folds < 2 or any(c.n_patients < 2 * self.folds for c in self.cancers):
            raise ConfigError(
                f"folds must be >= 2 and every cancer needs at least 2 x folds = {2 * self.folds} patients"
            )

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cancers]


@dataclass(frozen=True)
class CancerCohort:
    """The drawn patients of one cancer (arrays are indexed like ``patient_ids``)."""

    name: str
    patient_ids: list[str]
    slide_ids: list[list[str]]
    """Slides of each patient (one or two)."""
    proportions: np.ndarray
    """``[n, P]`` phenotype proportions (rows sum to 1)."""
    risk: np.ndarray
    """``[n]`` true log-hazard eta (higher = earlier events)."""
    time: np.ndarray
    """``[n]`` observed time in whole days (>= 1)."""
    event: np.ndarray
    """``[n]`` 1 = event observed, 0 = censored."""
    coefficients: np.ndarray
    """``[P]`` prognostic coefficients beta_c."""
    prevalence: np.ndarray
    """``[P]`` mean phenotype mix p_c of the cancer."""
    scale_days: float
    """Weibull scale lambda_c."""
    dropout_rate: float
    """Exponential censoring rate rho_c (per day) found by calibration."""

    @property
    def oracle_c_index(self) -> float:
        """Harrell's C of the true risk: what a perfect model of this cohort would reach."""
        return harrell_c(self.time, self.event, self.risk).value

    @property
    def censoring_rate(self) -> float:
        return float(1.0 - self.event.mean())


def cancer_rng(seed: int, name: str, purpose: int = 0, *index: int) -> np.random.Generator:
    """A generator that depends only on the seed, the cancer name, a purpose number (and an index)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), purpose, *index])


def shared_rng(seed: int, purpose: int) -> np.random.Generator:
    """A generator for quantities shared by all cancers (coefficients, prototypes, textures)."""
    return np.random.default_rng([seed, purpose])


def coefficients(spec: CohortSpec) -> dict[str, np.ndarray]:
    """beta_c = sqrt(s_c) b_shared + sqrt(1 - s_c) b_c for every cancer (section formula above),
    with s_c the cancer's own ``sharing`` when set, else the cohort's; with ``exact_sharing``
    the directions are first orthonormalised (:func:`mix_covariance`, module docstring)."""
    shared = shared_rng(spec.seed, 1).standard_normal(spec.phenotypes)
    owns = [cancer_rng(spec.seed, c.name, 1).standard_normal(spec.phenotypes) for c in spec.cancers]
    if spec.exact_sharing:
        shared, *owns = _orthonormal([shared, *owns], mix_covariance(spec, shared_prevalence(spec)))
    out = {}
    for cancer, own in zip(spec.cancers, owns, strict=True):
        s = spec.sharing if cancer.sharing is None else cancer.sharing
        out[cancer.name] = math.sqrt(s) * shared + math.sqrt(1.0 - s) * own
    return out


def mix_covariance(spec: CohortSpec, prevalence: np.ndarray) -> np.ndarray:
    """``[P, P]`` covariance of a patient's mix ``pi ~ Dirichlet(alpha)``, ``alpha = a P p + 10^-3``
    (as drawn in :func:`draw_cancer`): ``(diag(m) - m m^T) / (A + 1)``, ``A = sum(alpha)``,
    ``m = alpha / A``."""
    alpha = spec.concentration * spec.phenotypes * prevalence + 1e-3
    total = float(alpha.sum())
    mean = alpha / total
    return (np.diag(mean) - np.outer(mean, mean)) / (total + 1.0)


def _orthonormal(vectors: list[np.ndarray], metric: np.ndarray) -> list[np.ndarray]:
    """Gram-Schmidt of ``vectors`` in order under ``<x, y> = x^T metric y`` (unit norm each)."""
    out: list[np.ndarray] = []
    for v in vectors:
        w = v.astype(np.float64).copy()
        for u in out:
            w -= float(u @ metric @ w) * u
        norm = math.sqrt(max(float(w @ metric @ w), 0.0))
        if norm < 1e-9:
            raise ConfigError(
                "exact_sharing: the drawn coefficient directions are degenerate; try another seed"
            )
        out.append(w / norm)
    return out


def calibrate_dropout(
    event_times: np.ndarray, unit_exp: np.ndarray, follow_up: float, target: float
) -> float:
    """Rate rho such that the fraction of ``T > min(follow_up, E / rho)`` equals ``target``.

    ``unit_exp`` are fixed Exp(1) draws, so the censored fraction is non-decreasing in rho and
    bisection (on log rho) finds the smallest rate that reaches the target.

    Raises:
        ConfigError: administrative censoring alone already exceeds the target.
    """

    def censored(rate: float) -> float:
        limit = np.minimum(follow_up, unit_exp / rate) if rate > 0 else np.full_like(event_times, follow_up)
        return float(np.mean(event_times > limit))

    floor = censored(0.0)
    if floor > target + 1e-12:
        raise ConfigError(
            f"administrative censoring at {follow_up:.0f} days alone censors {floor:.0%} of patients (> {target:.0%})",
            hint="raise follow_up_days, lower median_days or ask for a higher censoring rate",
        )
    if target <= floor:
        return 0.0
    lo, hi = math.log(1e-9), math.log(1.0)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if censored(math.exp(mid)) >= target:
            hi = mid
        else:
            lo = mid
    return math.exp(hi)


def patient_id(cancer: str, index: int) -> str:
    return check_safe_id(f"SYN-{cancer}-{index:04d}", "patient_id")


def shared_prevalence(spec: CohortSpec) -> np.ndarray:
    """The one prevalence ``p ~ Dirichlet(2 * 1_P)`` of a ``shared_prevalence`` cohort."""
    return shared_rng(spec.seed, 8).dirichlet(np.full(spec.phenotypes, 2.0))


def prevalence_of(spec: CohortSpec, rng: np.random.Generator) -> np.ndarray:
    """``p_c ~ Dirichlet(2 * 1_P)`` from the cancer's ``rng`` (always drawn, so the patients'
    later draws do not depend on ``shared_prevalence``); with ``shared_prevalence`` the cohort's
    one ``p`` (:func:`shared_prevalence`) is returned instead."""
    own = rng.dirichlet(np.full(spec.phenotypes, 2.0))
    return shared_prevalence(spec) if spec.shared_prevalence else own


def draw_cancer(spec: CohortSpec, cancer: CancerSpec, beta: np.ndarray) -> CancerCohort:
    """Draw the patients, true risks and censored survival times of one cancer."""
    rng = cancer_rng(spec.seed, cancer.name, 0)
    n, k = cancer.n_patients, spec.weibull_shape
    prevalence = prevalence_of(spec, rng)
    proportions = rng.dirichlet(spec.concentration * spec.phenotypes * prevalence + 1e-3, size=n)
    raw = proportions @ beta
    spread = raw.std()
    risk = spec.effect_sd * (raw - raw.mean()) / spread if spread > 0 else np.zeros(n)
    scale = cancer.median_days / math.log(2.0) ** (1.0 / k)
    event_times = scale * (rng.exponential(size=n) * np.exp(-risk)) ** (1.0 / k)
    unit_exp = rng.exponential(size=n)
    rate = calibrate_dropout(event_times, unit_exp, spec.follow_up_days, cancer.censoring)
    censor_times = (
        np.minimum(spec.follow_up_days, unit_exp / rate) if rate > 0 else np.full(n, spec.follow_up_days)
    )
    event = (event_times <= censor_times).astype(np.int64)
    time = np.maximum(1, np.ceil(np.minimum(event_times, censor_times))).astype(np.int64)
    ids = [patient_id(cancer.name, i) for i in range(n)]
    two = rng.random(n) < spec.second_slide_rate
    slides = [
        [f"{pid}-DX1", f"{pid}-DX2"] if second else [f"{pid}-DX1"]
        for pid, second in zip(ids, two, strict=True)
    ]
    return CancerCohort(
        name=cancer.name,
        patient_ids=ids,
        slide_ids=slides,
        proportions=proportions,
        risk=risk,
        time=time,
        event=event,
        coefficients=beta,
        prevalence=prevalence,
        scale_days=scale,
        dropout_rate=rate,
    )


def draw_cohort(spec: CohortSpec) -> dict[str, CancerCohort]:
    """Every cancer of ``spec``, drawn (deterministic in ``spec``)."""
    betas = coefficients(spec)
    return {c.name: draw_cancer(spec, c, betas[c.name]) for c in spec.cancers}


class SpecOptions(TypedDict, total=False):
    """The other fields of :class:`CohortSpec` that :func:`standard_spec` passes on."""

    phenotypes: int
    effect_sd: float
    concentration: float
    weibull_shape: float
    follow_up_days: float
    folds: int
    second_slide_rate: float


def standard_spec(
    *,
    cancers: tuple[str, ...] = TCGA_CANCERS,
    target: str = "BRCA",
    target_patients: int = 150,
    source_patients: tuple[int, int] = (300, 500),
    sharing: float = 0.5,
    seed: int = 0,
    features: FeatureSpec | None = None,
    slides: SlideSpec | None = None,
    **options: Unpack[SpecOptions],
) -> CohortSpec:
    """A cohort with a data-poor ``target`` and richer sources of varied size and censoring.

    Source sizes are spread evenly over ``source_patients``; censoring rates (0.6-0.85) and
    medians (3-7 years) vary by cancer like TCGA's disease-specific survival, but are not
    TCGA's numbers.
    """
    target = normalize_cancer(target)
    rng = shared_rng(seed, 7)
    sources = [c for c in cancers if normalize_cancer(c) != target]
    lo, hi = source_patients
    sizes = (
        np.linspace(lo, hi, num=max(1, len(sources))).round().astype(int) if sources else np.array([], int)
    )
    rng.shuffle(sizes)
    size_of = dict(zip(sources, sizes.tolist(), strict=True))
    specs = []
    for name in cancers:
        n = target_patients if normalize_cancer(name) == target else int(size_of[name])
        specs.append(
            CancerSpec(
                name=name,
                n_patients=n,
                censoring=round(float(rng.uniform(0.6, 0.85)), 3),
                median_days=round(float(rng.uniform(3.0, 7.0)) * 365.0),
            )
        )
    return CohortSpec(
        cancers=tuple(specs),
        sharing=sharing,
        seed=seed,
        features=features or FeatureSpec(),
        slides=slides or SlideSpec(),
        **options,
    )
