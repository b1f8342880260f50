"""The study's figures (matplotlib object API, Agg canvas) and ``transfer/report.html``.

The heatmap's cells are the zero-shot C-index (written in each cell); their colour is the gain
over the target's own model (red: the source helps, blue: it hurts, white: no change), with ↑/↓
where the gain's interval excludes 0. Sources (rows) are sorted by the mean gain they give,
targets (columns) by the mean gain they receive, so the most helpful sources sit at the top and the
most receptive targets at the left; the diagonal (each cancer's own model) is grey, and the
evaluation-only cancers come last, coloured by C-index - 0.5 (they have no own model).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from ..evaluation.html_report import STYLE as REPORT_STYLE
from ..fileio import atomic_path, write_text
from .factors import FACTORS

if TYPE_CHECKING:
    from ..layout import ProjectLayout
    from .study import Study

DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _mean_gain(values: list[float | None]) -> float:
    clean = [v for v in values if v is not None]
    return float(np.mean(clean)) if clean else float("-inf")


def heatmap_order(study: Study) -> tuple[list[str], list[str]]:
    """(rows, columns) of the heatmap: sources by mean gain given, targets by mean gain received
    (trained targets first, then evaluation-only ones)."""
    from .study import rows_of

    rows = rows_of(study)
    trained = [t for t in study.targets if t not in study.rare]
    given = {s: _mean_gain([study.cells.get((s, t), {}).get("gain_mean") for t in trained]) for s in rows}
    received = {t: _mean_gain([study.cells.get((s, t), {}).get("gain_mean") for s in rows]) for t in trained}
    rows = sorted(rows, key=lambda s: -given[s])
    columns = sorted(trained, key=lambda t: -received[t]) + list(study.rare)
    return rows, columns


def plot_heatmap(path: Path, study: Study) -> Path:
    rows, columns = heatmap_order(study)
    colour = np.full((len(rows), len(columns)), np.nan)
    for i, s in enumerate(rows):
        for j, t in enumerate(columns):
            cell = study.cells.get((s, t))
            if cell is None or cell.get("c_mean") is None:
                continue
            if t in study.rare:
                colour[i, j] = cell["c_mean"] - 0.5
            elif cell.get("gain_mean") is not None:
                colour[i, j] = cell["gain_mean"]
    finite = np.abs(colour[np.isfinite(colour)])
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 0.1
    fig = Figure(figsize=(1.0 + 0.75 * len(columns), 1.2 + 0.45 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(colour)
    image = ax.imshow(masked, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_facecolor("#d9d9d9")
    for i, s in enumerate(rows):
        for j, t in enumerate(columns):
            cell = study.cells.get((s, t))
            if cell is None or cell.get("c_mean") is None:
                continue
            mark = {"positive": "↑", "negative": "↓"}.get(cell.get("transfer", ""), "")
            weight = "bold" if s == t else "normal"
            ax.text(j, i, f"{cell['c_mean']:.2f}{mark}", ha="center", va="center", fontsize=7, weight=weight)
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("target (test patients)")
    ax.set_ylabel("source model")
    ax.set_title("Zero-shot C-index; colour: gain over the target's own model", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8, label="gain (rare targets: C - 0.5)")
    return _save(fig, path)


def plot_factor(path: Path, study: Study, factor: str) -> Path:
    xs = [r[factor] for r in study.factors]
    ys = [r["gain"] for r in study.factors]
    fig = Figure(figsize=(4.2, 3.4), layout="constrained")
    ax = fig.add_subplot()
    keep = [
        (x, y, r) for x, y, r in zip(xs, ys, study.factors, strict=True) if x is not None and y is not None
    ]
    if keep:
        ax.scatter([k[0] for k in keep], [k[1] for k in keep], s=18, color="#1f77b4")
    ax.axhline(0.0, color="#7f7f7f", lw=0.8, ls="--")
    corr = next((c for c in study.correlations if c.factor == factor), None)
    if corr is not None and not math.isnan(corr.rho):
        p = "n/a" if math.isnan(corr.p) else f"{corr.p:.3g}"
        ax.set_title(f"Spearman rho = {corr.rho:+.2f} (p = {p}, {corr.pairs} pairs)", fontsize=9)
    ax.set_xlabel(FACTORS[factor])
    ax.set_ylabel("transfer gain (C-index)")
    return _save(fig, path)


def write_figures(layout: ProjectLayout, study: Study) -> dict[str, str]:
    """The heatmap and one scatter per factor; name -> path."""
    out = {"heatmap": str(plot_heatmap(layout.transfer_file("heatmap.png"), study))}
    if study.factors:
        for factor in FACTORS:
            out[f"factor_{factor}"] = str(plot_factor(layout.transfer_factor_plot(factor), study, factor))
    return out


STYLE = REPORT_STYLE + ".scatter img { width: 32%; }\n"
"""The evaluation report's style, with the factor scatter plots three to a row."""


def _markdown_tables(text: str) -> str:
    """The markdown of :func:`steph.transfer.study.markdown` as HTML (paragraphs and pipe tables)."""
    out: list[str] = []
    block: list[str] = []

    def flush() -> None:
        if not block:
            return
        cells = [
            [c.strip() for c in line.strip("|").split("|")] for line in block if not line.startswith("|---")
        ]
        head = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
        body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
        out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        block.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            block.append(line)
            continue
        flush()
        if line.strip():
            out.append(f'<p class="note">{html.escape(line)}</p>')
    flush()
    return "\n".join(out)


def _inline(cell: str) -> str:
    escaped = html.escape(cell)
    if escaped.startswith("**") and escaped.endswith("**"):
        return f"<b>{escaped[2:-2]}</b>"
    return escaped


def write_report(layout: ProjectLayout, study: Study, figures: dict[str, Any]) -> Path:
    """``transfer/report.html``: the heatmap, the tables and the factor plots."""
    from .study import markdown

    path = layout.transfer_file("report.html")
    scatter = "".join(
        f'<img src="{html.escape(Path(figures[k]).name)}" alt="{html.escape(k)}">'
        for k in (f"factor_{f}" for f in FACTORS)
        if k in figures
    )
    body = [
        "<h1>Cross-cancer transferability</h1>",
        f'<p class="note">{len(study.targets)} target(s), {len(study.sources)} source(s). '
        "How to read it: docs/transfer.md.</p>",
        "<h2>Transfer matrix</h2>",
        f'<img src="{html.escape(Path(figures["heatmap"]).name)}" alt="heatmap">',
        _markdown_tables(markdown(study)),
    ]
    if scatter:
        body += ["<h2>What drives transfer</h2>", f'<div class="scatter">{scatter}</div>']
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>stephctl transfer</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )
    return write_text(path, page)
