"""``stephctl check``: validate a project before any long run.

Per cancer: labels (and whether their times and events make sense), every split (leakage,
patients without labels, folds whose training set is smaller than the batch size) and every
labelled patient's features (present, readable, one ``D``, the project's encoder; with
``deep``, no NaN or inf). An evaluation-only cancer (``evaluation_only``) gets its labels and
features checked, on a row of its own, and no splits or models. Project-wide: one ``D`` across cancers, and theta0, the models and
the task vectors made from one another. Every problem is recorded; nothing stops the scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..config.project import project_cancers
from ..errors import StephError
from ..layout import normalize_cancer
from ..progress import NULL_PROGRESS, Progress
from .data import check_features, check_labels, check_splits
from .findings import CancerCounts, CheckReport, Finding, Level
from .models import check_models, check_theta0

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

__all__ = ["CancerCounts", "CheckReport", "Finding", "Level", "check_project"]


def _cancers(layout: ProjectLayout, config: ProjectConfig, cancers: Sequence[str] | None) -> list[str]:
    from ..errors import ConfigError

    names = [normalize_cancer(c) for c in cancers] if cancers else project_cancers(layout, config)
    if not names:
        raise ConfigError(
            "no cancers to check",
            hint=f"list them under cancers: in {layout.config_file} (needed when labels come from paths.labels), "
            "pass --cancer, or add labels/<CANCER>.csv",
        )
    return names


def check_project(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: Sequence[str] | None = None,
    deep: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> CheckReport:
    """Run every check (see the module docstring) and return what was found.

    Raises:
        ConfigError: no cancers to check.
    """
    report = CheckReport(root=str(layout.root), encoder=config.encoder, deep=deep)
    dims: dict[str, int] = {}
    names = _cancers(layout, config, cancers)
    rare = [c for c in config.evaluation_only if not cancers or c in names]
    for cancer in [*[c for c in names if c not in rare], *rare]:
        report.counts[cancer] = CancerCounts(evaluation_only=cancer in rare)
        try:
            cohort = check_labels(layout, config, cancer, report)
            if cohort is None:
                continue
            if cancer in rare:
                report.passed(
                    cancer,
                    "evaluation-only",
                    f"{len(cohort.patients)} patients, all test patients of `stephctl transfer` (no splits or models needed)",
                )
            else:
                check_splits(layout, config, cohort, report)
            dim = check_features(layout, config, cohort, report, deep=deep, progress=progress)
        except StephError as exc:  # a check that could not run is a failed check, not a crash
            report.error(cancer, "check", exc.message, exc.hint)
            continue
        if dim is not None:
            dims[cancer] = dim
    if len(set(dims.values())) > 1:
        listing = ", ".join(f"{c} D={d}" for c, d in dims.items())
        report.error(
            "*",
            "feature dimension",
            f"cancers disagree on D ({listing}); all models share one theta0",
            hint=f"use features of one encoder ({config.encoder}) for every cancer",
        )
    dim = next(iter(dims.values())) if len(set(dims.values())) == 1 else None
    theta0 = check_theta0(layout, config, dim, report)
    for cancer in report.counts:
        if cancer not in rare:
            check_models(layout, config, cancer, theta0, report)
    return report
