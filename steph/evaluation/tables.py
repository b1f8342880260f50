"""Comparison tables as plain data, and their Markdown / CSV text (the CLI renders them with rich)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

from .summary import SUMMARY_COLUMNS, Summary, format_change, summary_rows

LABELS = {"c_index": "C-index", "c_index_uno": "Uno C", "ibs": "IBS"}


def metric_label(name: str) -> str:
    """``auc_3y`` -> ``AUC 3y``; ``c_index`` -> ``C-index``."""
    return LABELS.get(name) or (f"AUC {name[4:]}" if name.startswith("auc_") else name)


@dataclass(frozen=True)
class Table:
    """A titled grid of strings with footnotes."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows, "notes": self.notes}


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "undefined"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _interval(ci: tuple[float, float]) -> str:
    return "" if math.isnan(ci[0]) else f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def comparison_tables(summary: Summary, *, resamples: int) -> list[Table]:
    """One table per target (methods x metrics) and, with several targets, one over targets."""
    ref = summary.reference
    level = f"{summary.confidence:.0%}"
    notes = [
        "mean ± sample standard deviation over folds (ddof=1)",
        f"{level} CI: percentile bootstrap of the cross-fold mean C-index ({resamples} paired resamples per fold)"
        if resamples
        else "no bootstrap intervals (--bootstrap 0)",
        f"vs {ref}: 100 (C / C_{ref} - 1) on the folds both methods have",
        "IBS: integrated Brier score, lower is better",
    ]
    others = [m for m in summary.metrics if m != "c_index"]
    tables: list[Table] = []
    for target, methods in summary.per_target.items():
        columns = [
            "method",
            "folds",
            "C-index",
            f"{level} CI",
            f"vs {ref}",
            *(metric_label(m) for m in others),
        ]
        rows = []
        for method, ms in methods.items():
            folds = (
                str(len(ms.folds))
                if not ms.partial
                else f"{len(ms.folds)}/{len(ms.folds) + len(ms.missing_folds)} partial"
            )
            rows.append(
                [
                    method,
                    folds,
                    _pm(ms.mean["c_index"], ms.std["c_index"]),
                    _interval(ms.ci["c_index"]),
                    format_change(ms.rel_change.get("c_index", math.nan)),
                    *(_pm(ms.mean[m], ms.std[m]) for m in others),
                ]
            )
        tables.append(Table(target, columns, rows, notes))
    if summary.over_targets:
        n = len(summary.per_target)
        columns = ["method", "targets", "C-index", f"vs {ref}", *(metric_label(m) for m in others)]
        rows = [
            [
                method,
                f"{len(entry['targets'])}/{n}",
                _pm(entry["mean"]["c_index"], math.nan),
                format_change(entry["rel_change"]["c_index"]),
                *(_pm(entry["mean"][m], math.nan) for m in others),
            ]
            for method, entry in summary.over_targets.items()
        ]
        tables.append(
            Table(
                f"mean over {n} targets",
                columns,
                rows,
                [
                    "mean of the per-target means",
                    f"vs {ref}: relative change of the mean over the targets both methods have",
                ],
            )
        )
    paper = paper_table(summary)
    if paper is not None:
        tables.append(paper)
    return tables


def paper_table(summary: Summary) -> Table | None:
    """The paper's table layout: one row per method of the comparison set in the paper's order
    (cancer-specific, the model-merging baselines with their "+ hypernetwork" rows, ROUPKT,
    STEPH and its ablations), one column per target with the mean C-index over folds, the mean
    over targets and its relative change against the reference method; "+ hypernetwork" rows also
    show the change against the same method without it (the paper's "0.5689 -> 0.6877").
    None when fewer than three of the paper's methods have results."""
    from ..merging.paper import PAPER_RUNS, paper_row

    targets = list(summary.per_target)
    found: dict[str, dict[str, float]] = {}
    fold_sets: dict[str, set[tuple[int, ...]]] = {}
    for target, methods in summary.per_target.items():
        for method, ms in methods.items():
            row = paper_row(method)
            if row is not None:
                found.setdefault(row, {})[target] = ms.mean["c_index"]
                fold_sets.setdefault(row, set()).add(tuple(sorted({*ms.folds, *ms.missing_folds})))
    if len(found) < 3:
        return None
    ref_row = paper_row(summary.reference)

    def average(label: str) -> float:
        """Undefined when a target is missing or the targets were evaluated on different folds."""
        values = [found[label].get(t, math.nan) for t in targets]
        if any(math.isnan(v) for v in values) or len(fold_sets[label]) > 1:
            return math.nan
        return sum(values) / len(values)

    ref_avg = average(ref_row) if ref_row in found else math.nan
    rows = []
    for label in PAPER_RUNS.values():
        if label not in found:
            continue
        avg = average(label)
        change = math.nan if math.isnan(ref_avg) or math.isnan(avg) else 100 * (avg / ref_avg - 1)
        without = label.removesuffix(" + hypernetwork")
        hyper = (
            f"{average(without):.4f} -> {avg:.4f}"
            if without != label and without in found and not math.isnan(avg)
            else ""
        )
        cells = [_pm(found[label].get(t, math.nan), math.nan) for t in targets]
        rows.append([label, *cells, _pm(avg, math.nan), format_change(change), hyper])
    columns = ["method", *targets, "average", f"vs {summary.reference}", "without -> with hypernetwork"]
    notes = [
        "mean test C-index over folds per target, in the paper's row order",
        "average: mean over the targets (undefined if a target is missing or the targets were "
        "evaluated on different folds)",
        f"vs {summary.reference}: 100 (C / C_{summary.reference} - 1) of the averages",
    ]
    return Table("paper layout: C-index", columns, rows, notes)


def to_markdown(tables: list[Table]) -> str:
    """GitHub-flavoured Markdown, one section per table with its notes as a footnote line."""
    out: list[str] = []
    for table in tables:
        out.append(f"### {table.title}\n")
        out.append("| " + " | ".join(table.columns) + " |")
        out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(table.columns))) + "|")
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]
        if table.notes:
            out.append("\n" + "; ".join(table.notes) + ".")
        out.append("")
    return "\n".join(out)


def to_csv(summary: Summary) -> str:
    """The summary.csv rows as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    writer.writerows([*row[:4], repr(row[4])] for row in summary_rows(summary))
    return buffer.getvalue()
