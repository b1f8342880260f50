"""Synthetic data: pyramidal test slides and multi-cancer survival cohorts with a known risk.

``generate_cohort(root, spec, level="features" | "slides")`` writes a cohort drawn from the
generative model of :mod:`steph.synthetic.cohort` into a project; ``standard_spec`` builds the
spec of a data-poor target with richer sources (the transfer benchmark and ``stephctl demo``).
:func:`steph.synthetic.results.write_results` writes finished results (labels, splits, every
method's predictions) for ``stephctl evaluate`` without training anything.
"""

from __future__ import annotations

from .cohort import (
    PHENOTYPES,
    TCGA_CANCERS,
    CancerCohort,
    CancerSpec,
    CohortSpec,
    FeatureSpec,
    SlideSpec,
    draw_cohort,
    standard_spec,
)
from .generate import generate_cohort

__all__ = [
    "PHENOTYPES",
    "TCGA_CANCERS",
    "CancerCohort",
    "CancerSpec",
    "CohortSpec",
    "FeatureSpec",
    "SlideSpec",
    "draw_cohort",
    "generate_cohort",
    "standard_spec",
]
