"""Across folds and targets: means, sample standard deviations, intervals and relative change.

* mean and **sample** standard deviation (ddof = 1) over the folds where a metric is defined;
* a 95% interval of the cross-fold mean: the percentile interval of the mean over folds of the
  per-fold bootstrap replicates (resample r of every fold averaged together);
* relative change against the reference method in the paper's form,
  ``100 (m / m_ref - 1)`` (0.6949 vs 0.6609 is +5.14%), on the folds both methods have;
* over several targets: the mean of the per-target means, and the relative change of that
  mean on the targets both methods have (the paper's "average over 13 cancers"). Only targets
  evaluated on the same folds are averaged: a method whose targets were asked for on different
  folds (a target on five folds, sources on one) gets no mean over targets, and a warning says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import read_csv, write_csv
from ..locks import hold_waiting
from ..metrics import percentile_interval
from .fold import FoldResult

SUMMARY_COLUMNS = ("target", "method", "fold", "metric", "value")
ALL_TARGETS = "mean"
"""``target`` of the rows averaged over targets (cancer names are upper case, so no clash)."""


def relative_change(value: float, reference: float) -> float:
    """100 (value / reference - 1), the paper's relative change in percent (NaN if undefined).

    >>> round(relative_change(0.6949, 0.6609), 2)
    5.14
    """
    if math.isnan(value) or math.isnan(reference) or reference == 0:
        return math.nan
    return 100.0 * (value / reference - 1.0)


def format_change(percent: float) -> str:
    """``+5.14%`` / ``-0.80%`` / ``n/a``."""
    return "n/a" if math.isnan(percent) else f"{percent:+.2f}%"


@dataclass
class MethodSummary:
    """One method on one target across its folds."""

    target: str
    method: str
    folds: list[int]
    missing_folds: list[int]
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    """Sample standard deviation over folds (ddof = 1); NaN with fewer than two folds."""
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    defined_folds: dict[str, int] = field(default_factory=dict)
    rel_change: dict[str, float] = field(default_factory=dict)
    """Percent change of the mean against the reference method, on the folds both have."""

    @property
    def partial(self) -> bool:
        return bool(self.missing_folds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "method": self.method,
            "folds": self.folds,
            "missing_folds": self.missing_folds,
            "partial": self.partial,
            "metrics": {
                name: {
                    "mean": _num(self.mean[name]),
                    "std": _num(self.std[name]),
                    "ci_low": _num(self.ci[name][0]),
                    "ci_high": _num(self.ci[name][1]),
                    "defined_folds": self.defined_folds[name],
                    "rel_change_pct": _num(self.rel_change.get(name, math.nan)),
                }
                for name in self.mean
            },
        }


@dataclass
class Summary:
    """Everything the tables, summary.csv and the report show."""

    metrics: list[str]
    reference: str
    confidence: float
    per_target: dict[str, dict[str, MethodSummary]]
    over_targets: dict[str, dict[str, Any]]
    """method -> {"targets": [...], "mean": {metric: v}, "rel_change": {metric: %}} (2+ targets only)."""
    folds: list[FoldResult]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference_method": self.reference,
            "std": "sample standard deviation over folds (ddof=1)",
            "interval": f"{self.confidence:.0%} percentile bootstrap",
            "targets": {t: [m.to_dict() for m in methods.values()] for t, methods in self.per_target.items()},
            "over_targets": {
                m: {
                    "targets": v["targets"],
                    "mean": _nums(v["mean"]),
                    "rel_change_pct": _nums(v["rel_change"]),
                }
                for m, v in self.over_targets.items()
            },
            "folds": [f.to_dict() for f in self.folds],
            "warnings": self.warnings,
        }


def _num(value: float) -> float | None:
    return None if math.isnan(value) else value


def _nums(values: dict[str, float]) -> dict[str, float | None]:
    return {k: _num(v) for k, v in values.items()}


def _mean_interval(results: list[FoldResult], metric: str, confidence: float) -> tuple[float, float]:
    reps = [r.metrics[metric].replicates for r in results if r.metrics[metric].defined]
    if not reps or any(rep.size == 0 or rep.size != reps[0].size for rep in reps):
        return (math.nan, math.nan)
    interval = percentile_interval(np.mean(np.stack(reps), axis=0), confidence)
    return (interval.low, interval.high)


def _summarize_method(
    target: str,
    method: str,
    results: list[FoldResult],
    expected: list[int],
    metrics: list[str],
    confidence: float,
) -> MethodSummary:
    folds = sorted(r.predictions.fold for r in results)
    summary = MethodSummary(target, method, folds, sorted(set(expected) - set(folds)))
    for name in metrics:
        values = np.array([r.metrics[name].value for r in results if r.metrics[name].defined])
        summary.defined_folds[name] = int(values.size)
        summary.mean[name] = float(values.mean()) if values.size else math.nan
        summary.std[name] = float(values.std(ddof=1)) if values.size > 1 else math.nan
        summary.ci[name] = _mean_interval(results, name, confidence)
    return summary


def _paired_means(a: list[FoldResult], b: list[FoldResult], metric: str) -> tuple[float, float]:
    """Means of ``a`` and ``b`` over the folds where both define ``metric``."""
    va = {r.predictions.fold: r.metrics[metric].value for r in a if r.metrics[metric].defined}
    vb = {r.predictions.fold: r.metrics[metric].value for r in b if r.metrics[metric].defined}
    common = sorted(set(va) & set(vb))
    if not common:
        return (math.nan, math.nan)
    return (float(np.mean([va[k] for k in common])), float(np.mean([vb[k] for k in common])))


def summarize(
    results: Sequence[FoldResult],
    *,
    metrics: list[str],
    reference: str,
    confidence: float,
    expected_folds: dict[str, list[int]],
) -> Summary:
    """Aggregate fold results per (target, method), against ``reference``, and over targets.

    Args:
        results: every evaluated fold.
        metrics: metric names, in display order.
        reference: method the relative change is computed against.
        confidence: level of the intervals of the cross-fold means.
        expected_folds: target -> the folds every method should have (a method lacking some
            is reported as partial).
    """
    grouped: dict[str, dict[str, list[FoldResult]]] = {}
    for r in results:
        grouped.setdefault(r.predictions.target, {}).setdefault(r.predictions.method, []).append(r)
    warnings: list[str] = []
    per_target: dict[str, dict[str, MethodSummary]] = {}
    for target in sorted(grouped):
        methods = grouped[target]
        expected = expected_folds.get(target) or sorted(
            {r.predictions.fold for rs in methods.values() for r in rs}
        )
        per_target[target] = {}
        for method in sorted(methods):
            ms = _summarize_method(target, method, methods[method], expected, metrics, confidence)
            per_target[target][method] = ms
            if ms.partial:
                paired = (
                    ""
                    if method == reference
                    else f" and its relative change uses the folds shared with {reference}"
                )
                warnings.append(
                    f"{target}/{method}: partial, fold(s) {_join(ms.missing_folds)} missing (has {_join(ms.folds)}); "
                    f"its mean is over the folds it has{paired}"
                )
            for name in metrics:
                undefined = [r for r in methods[method] if not r.metrics[name].defined]
                if undefined:
                    reasons = sorted({r.metrics[name].reason for r in undefined})
                    folds = _join(sorted(r.predictions.fold for r in undefined))
                    warnings.append(
                        f"{target}/{method}: {name} undefined on fold(s) {folds}: {'; '.join(reasons)}"
                    )
        if reference in methods:
            for method, ms in per_target[target].items():
                for name in metrics:
                    m, ref = _paired_means(methods[method], methods[reference], name)
                    ms.rel_change[name] = relative_change(m, ref)
        else:
            warnings.append(
                f"{target}: no results for the reference method {reference!r}; no relative change"
            )
    over = _over_targets(grouped, per_target, metrics, reference, warnings) if len(per_target) > 1 else {}
    return Summary(metrics, reference, confidence, per_target, over, list(results), warnings)


def _over_targets(
    grouped: dict[str, dict[str, list[FoldResult]]],
    per_target: dict[str, dict[str, MethodSummary]],
    metrics: list[str],
    reference: str,
    warnings: list[str],
) -> dict[str, dict[str, Any]]:
    """Per method, the mean over its targets; a method whose targets were asked for on different
    folds is left out (and a warning names the folds of each target)."""
    methods = sorted({m for methods in per_target.values() for m in methods})
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        targets = [t for t in per_target if method in per_target[t]]
        by_folds: dict[tuple[int, ...], list[str]] = {}
        for t in targets:
            ms = per_target[t][method]
            by_folds.setdefault(tuple(sorted({*ms.folds, *ms.missing_folds})), []).append(t)
        if len(by_folds) > 1:
            sets = "; ".join(f"{', '.join(ts)}: fold(s) {_join(folds)}" for folds, ts in by_folds.items())
            warnings.append(
                f"{method}: no mean over targets, they were evaluated on different folds ({sets}); "
                "compare targets of the same folds (evaluate -t)"
            )
            continue
        entry: dict[str, Any] = {"targets": targets, "mean": {}, "rel_change": {}}
        for name in metrics:
            means = [per_target[t][method].mean[name] for t in targets]
            defined = [v for v in means if not math.isnan(v)]
            entry["mean"][name] = float(np.mean(defined)) if defined else math.nan
            pairs = [
                _paired_means(grouped[t][method], grouped[t][reference], name)
                for t in targets
                if reference in grouped[t]
            ]
            pairs = [p for p in pairs if not math.isnan(p[0])]
            entry["rel_change"][name] = (
                relative_change(float(np.mean([p[0] for p in pairs])), float(np.mean([p[1] for p in pairs])))
                if pairs
                else math.nan
            )
        out[method] = entry
    return out


def _join(values: Sequence[object]) -> str:
    return ", ".join(str(v) for v in values)


def summary_rows(summary: Summary) -> list[tuple[str, str, str, str, float]]:
    """Rows of summary.csv: ``target,method,fold,metric,value``.

    Per fold: each metric and, when bootstrapped, ``<metric>_ci_low`` / ``<metric>_ci_high``;
    fold ``mean``: the cross-fold mean, its interval and ``<metric>_rel_change_pct``; fold
    ``std``: the sample standard deviation (ddof = 1). Target ``mean``: over targets.
    Undefined values are ``nan``.
    """
    rows: list[tuple[str, str, str, str, float]] = []
    for result in sorted(
        summary.folds, key=lambda r: (r.predictions.target, r.predictions.method, r.predictions.fold)
    ):
        p = result.predictions
        for name in summary.metrics:
            m = result.metrics[name]
            rows.append((p.target, p.method, str(p.fold), name, m.value))
            if m.replicates.size:
                rows += [(p.target, p.method, str(p.fold), f"{name}_ci_low", m.ci_low)]
                rows += [(p.target, p.method, str(p.fold), f"{name}_ci_high", m.ci_high)]
    for target, methods in summary.per_target.items():
        for method, ms in methods.items():
            for name in summary.metrics:
                rows.append((target, method, "mean", name, ms.mean[name]))
                if not math.isnan(ms.ci[name][0]):
                    rows.append((target, method, "mean", f"{name}_ci_low", ms.ci[name][0]))
                    rows.append((target, method, "mean", f"{name}_ci_high", ms.ci[name][1]))
                if name in ms.rel_change:
                    rows.append((target, method, "mean", f"{name}_rel_change_pct", ms.rel_change[name]))
            rows += [(target, method, "std", name, ms.std[name]) for name in summary.metrics]
    for method, entry in summary.over_targets.items():
        for name in summary.metrics:
            rows.append((ALL_TARGETS, method, "mean", name, entry["mean"][name]))
            rows.append((ALL_TARGETS, method, "mean", f"{name}_rel_change_pct", entry["rel_change"][name]))
    return rows


def write_summary(path: Path, summary: Summary) -> Path:
    """Write summary.csv atomically (see :func:`summary_rows`).

    The rows of every (target, method) this run evaluated are replaced; all other rows are kept,
    so per-target Slurm tasks each add their own target and ``evaluate -m M`` replaces only
    method ``M``'s rows. The over-targets rows (target ``mean``) of a method are recomputed only
    by a run that evaluates two or more targets, otherwise kept as they were. The file is
    rewritten under a lock so concurrent tasks do not lose each other's rows.
    """
    rows = summary_rows(summary)
    evaluated = {(row[0], row[1]) for row in rows if row[0] != ALL_TARGETS}
    with hold_waiting(path):
        kept = []
        if path.is_file():
            for old in read_csv(path):
                target, method = old.get("target", ""), old.get("method", "")
                if (target, method) in evaluated or (
                    target == ALL_TARGETS and method in summary.over_targets
                ):
                    continue
                kept.append((target, method, old["fold"], old["metric"], float(old["value"])))
        merged = sorted(kept + rows, key=lambda r: r[0] == ALL_TARGETS)  # stable: over-targets rows last
        return write_csv(path, SUMMARY_COLUMNS, merged)
