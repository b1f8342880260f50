"""The report's figures, drawn with matplotlib's object API (no pyplot state, Agg canvas).

Each function writes one PNG atomically and returns its path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..fileio import atomic_path
from .coefficients import SourceCoefficients
from .fold import DAYS_PER_YEAR
from .groups import RiskGroups
from .summary import MethodSummary

DPI = 110
REFERENCE_COLOUR = "#7f7f7f"
METHOD_COLOUR = "#1f77b4"
LOW_COLOUR, HIGH_COLOUR = "#2c7fb8", "#d95f0e"


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def format_p(p: float, *, label: bool = True) -> str:
    """``p = 0.031``, ``p < 0.001`` or ``p = n/a`` (without the ``p`` when ``label`` is false)."""
    text = "= n/a" if math.isnan(p) else "< 0.001" if p < 0.001 else f"= {p:.3f}"
    return f"p {text}" if label else text.removeprefix("= ")


def plot_cindex(
    path: Path,
    target: str,
    methods: dict[str, MethodSummary],
    fold_values: dict[str, list[float]],
    *,
    reference: str,
    confidence: float,
) -> Path:
    """Bar chart: mean C-index per method with its bootstrap interval (or ± sd), fold values as dots."""
    names = list(methods)
    means = np.array([methods[m].mean["c_index"] for m in names])
    low = np.array([methods[m].ci["c_index"][0] for m in names])
    high = np.array([methods[m].ci["c_index"][1] for m in names])
    use_ci = not np.isnan(low).all()
    if use_ci:  # with few resamples the mean can lie outside its percentile interval: no bar there
        err = np.vstack([np.nan_to_num(means - low), np.nan_to_num(high - means)])
    else:
        err = np.vstack([np.nan_to_num(np.array([methods[m].std["c_index"] for m in names]))] * 2)
    err = np.clip(err, 0.0, None)
    fig = Figure(figsize=(max(6.0, 1.1 * len(names) + 2.0), 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(names))
    colours = [REFERENCE_COLOUR if m == reference else METHOD_COLOUR for m in names]
    ax.bar(x, np.nan_to_num(means), color=colours, alpha=0.85, width=0.6, zorder=2)
    ax.errorbar(x, np.nan_to_num(means), yerr=err, fmt="none", ecolor="black", capsize=4, lw=1.2, zorder=3)
    everything = np.concatenate([means, low, high, *(np.asarray(v, float) for v in fold_values.values())])
    finite = everything[np.isfinite(everything)]
    bottom = min(0.45, float(finite.min()) - 0.03) if finite.size else 0.45
    top = min(1.02, max(0.8, float(finite.max()) + 0.07)) if finite.size else 1.0
    for i, m in enumerate(names):
        vals = np.asarray(fold_values.get(m, []), dtype=float)
        jitter = np.linspace(-0.03, 0.03, vals.size) if vals.size > 1 else np.zeros(vals.size)
        ax.scatter(
            i + 0.19 + jitter,
            vals,
            s=16,
            facecolor="white",
            edgecolor="black",
            lw=0.9,
            zorder=4,
            label="fold values" if i == 0 else None,
        )
        label = "undefined" if math.isnan(means[i]) else f"{means[i]:.3f}"
        colour = "black" if math.isnan(means[i]) else "white"
        ax.text(
            i,
            bottom + 0.01,
            label,
            ha="center",
            va="bottom",
            fontsize=8,
            color=colour,
            weight="bold",
            zorder=5,
        )
    ax.set_ylim(bottom, top)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.axhline(0.5, color="grey", ls="--", lw=0.8, zorder=1)
    ax.set_xticks(x, names, rotation=20 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_ylabel("Harrell's C-index")
    bars = (
        f"error bars: {confidence:.0%} bootstrap CI of the mean"
        if use_ci
        else "error bars: ± sample sd over folds"
    )
    ax.set_title(f"{target}: C-index per method (mean over folds)\n{bars}", fontsize=9)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    handles, _ = ax.get_legend_handles_labels()
    if reference in names:
        handles.append(Patch(color=REFERENCE_COLOUR, alpha=0.85, label=f"reference ({reference})"))
    if handles:
        ax.legend(handles=handles, loc="upper left", fontsize=8, frameon=False)
    return _save(fig, path)


def at_risk(time_years: np.ndarray, ticks: np.ndarray) -> list[int]:
    """Number at risk at each tick: ``n(t) = #{i : T_i > t}``, the patients still followed after t
    (lifelines' ``add_at_risk_counts`` default: a patient whose event or censoring is at t is
    no longer counted at t).

    >>> at_risk(np.array([0.5, 1.0, 2.5]), np.array([0.0, 1.0, 2.0]))
    [3, 1, 1]
    """
    times = np.sort(np.asarray(time_years, dtype=np.float64))
    return [int(times.size - np.searchsorted(times, t, side="right")) for t in np.asarray(ticks, float)]


def km_ticks(horizon_years: float) -> np.ndarray:
    """Whole years from 0 to ``horizon`` (every 2nd or 5th year for long follow-up; quarters below 1 year)."""
    if horizon_years < 1.0:
        return np.arange(0.0, horizon_years + 1e-9, 0.25)
    step = 1.0 if horizon_years <= 8 else 2.0 if horizon_years <= 16 else 5.0
    return np.arange(0.0, horizon_years + 1e-9, step)


@dataclass(frozen=True)
class KmFigure:
    """The KM PNG and its number-at-risk table: ``ticks`` (years) and, per method, the low-
    and high-risk rows as drawn (read back from the table's text artists)."""

    path: Path
    ticks: tuple[float, ...]
    at_risk: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]


def plot_km(path: Path, target: str, groups: list[RiskGroups]) -> KmFigure:
    """Kaplan-Meier curves of the low/high-risk groups of each method, with the log-rank p-value
    and the number at risk (:func:`at_risk`) of each group under each panel."""
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig = Figure(figsize=(max(5.0, 4.2 * cols), 4.3 * rows + 0.7), layout="constrained")
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[4.0, 1.0] * rows)
    horizon = max(float(g.time.max()) for g in groups) / DAYS_PER_YEAR
    ticks = km_ticks(horizon)
    drawn: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    first = None
    for index, group in enumerate(groups):
        r, c = divmod(index, cols)
        ax = fig.add_subplot(grid[2 * r, c], sharey=first)
        table = fig.add_subplot(grid[2 * r + 1, c], sharex=ax)
        first = first or ax
        counts: dict[bool, tuple[int, ...]] = {}
        for high, colour, name in ((False, LOW_COLOUR, "low risk"), (True, HIGH_COLOUR, "high risk")):
            mask = group.high == high
            if not mask.any():
                counts[high] = tuple(0 for _ in ticks)
                continue
            curve = group.curve(high)
            xs = np.r_[0.0, curve.times] / DAYS_PER_YEAR
            ys = np.r_[1.0, curve.values]
            ax.step(xs, ys, where="post", color=colour, lw=1.6, label=f"{name} (n={int(mask.sum())})")
            censored = mask & ~group.event
            ax.plot(
                group.time[censored] / DAYS_PER_YEAR,
                curve(group.time[censored]),
                "|",
                color=colour,
                ms=6,
                mew=1,
            )
            counts[high] = tuple(at_risk(group.time[mask] / DAYS_PER_YEAR, ticks))
        note = format_p(group.logrank.p_value)
        if group.test_median_folds:
            note += f"\ncut-off: test median (fold {', '.join(map(str, group.test_median_folds))})"
        ax.text(0.97, 0.97, f"log-rank {note}", transform=ax.transAxes, ha="right", va="top", fontsize=8)
        ax.set_title(group.method, fontsize=10)
        ax.set_xlim(0, horizon * 1.02)
        ax.set_ylim(0, 1.04)
        ax.set_xticks(ticks)
        ax.set_xlabel("years")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8, frameon=False)
        if c == 0:
            ax.set_ylabel("survival probability")
        drawn[group.method] = _at_risk_table(table, ticks, counts)
    fig.suptitle(
        f"{target}: Kaplan-Meier by predicted risk\n(split at each fold's training median risk, pooled over folds)",
        fontsize=10,
    )
    _save(fig, path)
    return KmFigure(path, tuple(float(t) for t in ticks), drawn)


def _at_risk_table(
    ax: Axes, ticks: np.ndarray, counts: dict[bool, tuple[int, ...]]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Write the counts under the curves (rows: low, high risk); return them as read back."""
    read: dict[bool, list[int]] = {False: [], True: []}
    for row, (high, colour) in enumerate(((False, LOW_COLOUR), (True, HIGH_COLOUR))):
        for tick, count in zip(ticks, counts[high], strict=True):
            text = ax.text(tick, 1 - row, str(count), ha="center", va="center", fontsize=8, color=colour)
            read[high].append(int(text.get_text()))
    ax.set_ylim(-0.6, 1.6)
    ax.set_yticks([1, 0], ["low risk", "high risk"], fontsize=8)
    ax.tick_params(axis="y", length=0, pad=16)
    ax.tick_params(axis="x", bottom=False, labelbottom=False)
    ax.set_title("number at risk", fontsize=8, loc="left")
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    return tuple(read[False]), tuple(read[True])


def plot_coefficients(path: Path, target: str, coef: SourceCoefficients) -> Path:
    """Heatmap of mean w, mean lambda and selection frequency per source cancer."""
    data = np.array([coef.mean_w, coef.mean_lambda, coef.selected])
    labels = ["mean w", "mean λ", "selected"]
    fig = Figure(figsize=(max(4.5, 0.75 * len(coef.sources) + 2.2), 2.9), layout="constrained")
    ax = fig.subplots()
    vmax = max(1.0, float(np.nanmax(data)))
    image = ax.imshow(data, cmap="viridis", aspect="auto", vmin=0.0, vmax=vmax)
    for (i, j), value in np.ndenumerate(data):
        colour = "white" if value < 0.6 * vmax else "black"
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(coef.sources)), coef.sources, rotation=45 if len(coef.sources) > 6 else 0)
    ax.set_yticks(range(3), labels)
    ax.set_xlabel("source cancer")
    fig.colorbar(image, ax=ax, shrink=0.9)
    ax.set_title(
        f"{target} / {coef.method}: merge coefficients per source\n"
        f"({coef.patients} test patients, {len(coef.folds)} fold{'s' if len(coef.folds) != 1 else ''})",
        fontsize=10,
    )
    return _save(fig, path)
