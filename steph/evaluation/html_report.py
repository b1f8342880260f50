"""``reports/<TARGET>/report.html``: the comparison table, the plots next to it, per-fold details."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..fileio import write_text
from ..layout import ProjectLayout
from .coefficients import source_coefficients
from .fold import FoldResult
from .groups import RiskGroups, risk_groups
from .plots import format_p, plot_cindex, plot_coefficients, plot_km
from .summary import Summary
from .tables import Table, metric_label

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #555; font-size: 0.85em; }
.warn { color: #a15c00; }
"""


IBS_SENSIBLE = 0.25
"""The integrated Brier score of predicting S(t) = 0.5 for everyone."""
IBS_SPREAD = 2.0
"""An IBS upper bound more than this many times the fold's point value is an unstable interval."""


def ibs_unstable(value: float, high: float) -> bool:
    """True for an IBS interval whose upper bound ``high`` is not sensible: above 1 (no unweighted
    squared error of probabilities reaches it), or above both :data:`IBS_SENSIBLE` and
    :data:`IBS_SPREAD` times the point ``value``.

    >>> ibs_unstable(0.21, 1.31), ibs_unstable(0.15, 0.40), ibs_unstable(0.25, 0.36), ibs_unstable(0.05, 0.2)
    (True, True, False, False)
    """
    if math.isnan(high):
        return False
    return high > 1.0 or (high > IBS_SENSIBLE and high > IBS_SPREAD * value)


def ibs_instability_note(results: list[FoldResult]) -> str:
    """Text for the page when a fold's IBS bootstrap interval is not sensible (:func:`ibs_unstable`),
    else ``""``.

    The Brier score weights each patient by the inverse of the censoring survival, ``1 / G(t)``.
    With few patients and late censoring, ``G`` falls low and a handful of patients carry large
    weights; bootstrap resamples that repeat them inflate the score, so the upper bound can reach
    several times the point value and even pass 1 (which no unweighted squared error of
    probabilities can reach). The point value is less affected; the interval says little there.
    """
    wild = [
        r
        for r in results
        if "ibs" in r.metrics and ibs_unstable(r.metrics["ibs"].value, r.metrics["ibs"].ci_high)
    ]
    if not wild:
        return ""
    worst = max(r.metrics["ibs"].ci_high for r in wild)
    folds = ", ".join(
        f"{r.predictions.method} fold {r.predictions.fold} ({r.n} patients: IBS {r.metrics['ibs'].value:.2f}, "
        f"upper bound {r.metrics['ibs'].ci_high:.2f})"
        for r in sorted(wild, key=lambda r: (r.predictions.method, r.predictions.fold))
    )
    beyond_one = (
        " Some pass 1, which a squared error of probabilities cannot reach without weights."
        if worst > 1.0
        else ""
    )
    return (
        f"Unstable IBS intervals (upper bound above 1, or above {IBS_SENSIBLE}, the score of predicting "
        f"50 % survival for everyone, and above {IBS_SPREAD:g} times the point value): {folds}.{beyond_one} "
        "The Brier score weights each patient by 1 / G(t), the inverse of the censoring survival; on "
        "small folds with late censoring a few patients carry large weights and bootstrap resamples "
        "that repeat them inflate the score. These upper bounds (and any IBS above 1) reflect the "
        "weights, not the model; compare methods on the folds without this note or on larger folds."
    )


@dataclass
class TargetReport:
    """Files written for one target."""

    html: Path
    figures: list[Path] = field(default_factory=list)


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    notes = f'<p class="note">{html.escape("; ".join(table.notes))}.</p>' if table.notes else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}"


def _cell(value: float, low: float, high: float) -> str:
    if math.isnan(value):
        return "undefined"
    return f"{value:.4f}" + ("" if math.isnan(low) else f" [{low:.3f}, {high:.3f}]")


def _fold_table(results: list[FoldResult], metrics: list[str]) -> Table:
    rows = []
    for r in sorted(results, key=lambda r: (r.predictions.method, r.predictions.fold)):
        cells = [_cell(r.metrics[m].value, r.metrics[m].ci_low, r.metrics[m].ci_high) for m in metrics]
        rows.append(
            [
                r.predictions.method,
                str(r.predictions.fold),
                str(r.n),
                str(r.events),
                *cells,
                r.censoring_source,
            ]
        )
    columns = ["method", "fold", "n", "events", *(metric_label(m) for m in metrics), "censoring from"]
    reasons = sorted(
        {f"{metric_label(m)}: {r.metrics[m].reason}" for r in results for m in metrics if r.metrics[m].reason}
    )
    return Table("per fold", columns, rows, ["undefined = " + "; ".join(reasons)] if reasons else [])


def _patient_pages(layout: ProjectLayout, target: str) -> str:
    """Link to the per-patient pages of ``stephctl explain`` (or how to make them)."""
    index = layout.patients_index(target)
    if index.is_file():
        href = index.relative_to(layout.report_dir(target)).as_posix()
        count = len(layout.patient_pages(target))
        return (
            f'<h2>Patients</h2><p><a href="{html.escape(href)}">{count} patient page(s)</a>: attention '
            "heatmaps, most and least attended patches, STEPH's transfer, QuPath files.</p>"
        )
    return (
        '<h2>Patients</h2><p class="note">No patient pages yet: '
        f"<code>stephctl explain -t {html.escape(target)} -m METHOD -k FOLD --top 2</code> draws "
        "attention heatmaps and each patient's transfer, linked from here.</p>"
    )


def write_target_report(
    layout: ProjectLayout,
    target: str,
    summary: Summary,
    table: Table,
    *,
    versions: str,
) -> TargetReport:
    """Draw the figures of ``target`` and write its report.html next to them."""
    methods = summary.per_target[target]
    results = [r for r in summary.folds if r.predictions.target == target]
    by_method = {m: [r for r in results if r.predictions.method == m] for m in methods}
    fold_values = {
        m: [r.metrics["c_index"].value for r in rs if r.metrics["c_index"].defined]
        for m, rs in by_method.items()
    }
    report = TargetReport(layout.report_file(target, "report.html"))
    sections = [f"<h2>Comparison</h2>{_table_html(table)}"]

    bars = plot_cindex(
        layout.report_file(target, "cindex.png"),
        target,
        methods,
        fold_values,
        reference=summary.reference,
        confidence=summary.confidence,
    )
    report.figures.append(bars)
    sections.append(f'<h2>C-index per method</h2><img src="{bars.name}" alt="C-index per method">')

    groups: list[RiskGroups] = [risk_groups(m, rs) for m, rs in by_method.items()]
    km = plot_km(layout.report_file(target, "km.png"), target, groups).path
    report.figures.append(km)
    logrank = Table(
        "log-rank",
        ["method", "low risk (n / events)", "high risk (n / events)", "chi²", "p"],
        [
            [
                g.method,
                f"{int((~g.high).sum())} / {g.logrank.observed[0]}",
                f"{int(g.high.sum())} / {g.logrank.observed[1]}",
                "n/a" if math.isnan(g.logrank.statistic) else f"{g.logrank.statistic:.2f}",
                format_p(g.logrank.p_value, label=False),
            ]
            for g in groups
        ],
        ["groups split at each fold's training median risk and pooled over folds"],
    )
    sections.append(
        f"<h2>Risk groups: Kaplan-Meier curves and log-rank test</h2>"
        f'<img src="{km.name}" alt="Kaplan-Meier curves">{_table_html(logrank)}'
    )

    for method, rs in by_method.items():
        coef = source_coefficients(layout, target, method, [r.predictions.fold for r in rs])
        if coef is None:
            continue
        png = plot_coefficients(layout.report_file(target, f"coefficients-{method}.png"), target, coef)
        report.figures.append(png)
        sections.append(
            f"<h2>{html.escape(method)}: merge coefficients</h2>"
            f'<img src="{png.name}" alt="{html.escape(method)} coefficients">'
        )

    ibs_note = ibs_instability_note(results)
    if ibs_note:
        sections.insert(1, f'<p class="warn">{html.escape(ibs_note)}</p>')
    sections.append(f"<h2>Per fold</h2>{_table_html(_fold_table(results, summary.metrics))}")
    sections.append(_patient_pages(layout, target))
    mine = [w for w in summary.warnings if w.startswith(f"{target}/") or w.startswith(f"{target}:")]
    if mine:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in mine)
        sections.append(f'<h2>Warnings</h2><ul class="warn">{items}</ul>')
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(target)}: stephctl evaluate</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(target)}: survival evaluation</h1>"
        f'<p class="note">{html.escape(versions)}</p>' + "".join(sections) + "</body></html>\n"
    )
    write_text(report.html, page)
    return report
