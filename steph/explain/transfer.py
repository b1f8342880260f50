"""The patient's STEPH transfer: the weight w and the mixup coefficient lambda of every source.

STEPH merges the patient's encoder as ``theta0 + sum_{i in S} w_i (lambda_i tau_t + (1 - lambda_i)
tau_{s_i})`` (docs/merge.md, "STEPH in plain words"): ``w_i`` is how much source i's slot counts, ``lambda_i`` how much of
that slot stays the target's own task vector (so ``w_i (1 - lambda_i)`` is what source i's
knowledge contributes), and ``S`` the selected top-k sources. The chart draws exactly the numbers
it is given (for a project, the run's ``coefficients.csv`` row of the patient).

The weights come out of a ReLU, so a patient can get ``w_i = 0`` for every source: the sum is
empty and the patient's encoder is ``theta0`` itself. The top-k "selection" among those tied
zeros is arbitrary, so such a patient gets no bars and no stars, only the words
:data:`NO_TRANSFER`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from ..fileio import atomic_path

DPI = 110
SELECTED_COLOUR, OTHER_COLOUR = "#d95f0e", "#bdbdbd"
NO_TRANSFER = "no transfer for this patient"


@dataclass(frozen=True)
class Transfer:
    """One patient's coefficients, one entry per source cancer (same order in every field)."""

    sources: tuple[str, ...]
    w: tuple[float, ...]
    lam: tuple[float, ...]
    selected: tuple[bool, ...]

    def __post_init__(self) -> None:
        n = len(self.sources)
        if not (len(self.w) == len(self.lam) == len(self.selected) == n) or n == 0:
            raise ValueError("Transfer needs one w, lambda and selected flag per source (at least one)")

    @property
    def none(self) -> bool:
        """Every weight is 0: nothing is added to ``theta0`` and the selection is meaningless."""
        return not any(w > 0 for w in self.w)

    @property
    def contribution(self) -> tuple[float, ...]:
        """``[i in S] w_i (1 - lambda_i)``: the source's coefficient on its own task vector."""
        return tuple(
            w * (1.0 - lam) if sel else 0.0
            for w, lam, sel in zip(self.w, self.lam, self.selected, strict=True)
        )


@dataclass(frozen=True)
class TransferFigure:
    """The PNG and the bar lengths read back from the drawn artists (source order; all empty
    when the patient has no transfer, see :attr:`Transfer.none`)."""

    path: Path
    w: tuple[float, ...]
    lam: tuple[float, ...]
    selected: tuple[bool, ...]
    text: str = ""
    """The words drawn instead of the bars (:data:`NO_TRANSFER` ...), else ``""``."""


def draw_transfer(path: Path, transfer: Transfer, *, title: str) -> TransferFigure:
    """Horizontal bars of w and lambda per source; selected sources in colour and starred.

    A patient whose weights are all 0 gets a short figure that says :data:`NO_TRANSFER` instead.
    """
    if transfer.none:
        return _draw_no_transfer(path, transfer, title=title)
    names = list(transfer.sources)
    y = np.arange(len(names))
    colours = [SELECTED_COLOUR if s else OTHER_COLOUR for s in transfer.selected]
    labels = [f"* {n}" if s else n for n, s in zip(names, transfer.selected, strict=True)]
    fig = Figure(figsize=(8.6, 1.5 + 0.38 * len(names)), layout="constrained")
    ax_w, ax_l = fig.subplots(1, 2, sharey=True)
    bars_w = ax_w.barh(y, transfer.w, color=colours)
    bars_l = ax_l.barh(y, transfer.lam, color=colours)
    ax_w.set_yticks(y, labels)
    ax_w.invert_yaxis()
    ax_w.set_xlabel("aggregation weight w")
    ax_l.set_xlabel("lambda (1 = all target, 0 = all source)")
    ax_l.set_xlim(0.0, 1.0)
    for ax, values in ((ax_w, transfer.w), (ax_l, transfer.lam)):
        for yi, v in zip(y, values, strict=True):
            ax.text(v, yi, f" {v:.3f}", va="center", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    ax_w.set_xlim(0.0, max(max(transfer.w), 1e-9) * 1.25)
    fig.suptitle(f"{title}\n* = selected (top-k) source, in colour", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return TransferFigure(
        path,
        tuple(float(b.get_width()) for b in bars_w),
        tuple(float(b.get_width()) for b in bars_l),
        tuple(b.get_facecolor() == to_rgba(SELECTED_COLOUR) for b in bars_w),
    )


def _draw_no_transfer(path: Path, transfer: Transfer, *, title: str) -> TransferFigure:
    text = (
        f"{NO_TRANSFER}: the weight w of all {len(transfer.sources)} sources is 0,\n"
        "so the merged encoder is theta0 alone and no source (or target) task vector is added"
    )
    fig = Figure(figsize=(8.6, 1.6), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, transform=ax.transAxes)
    fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return TransferFigure(path, (), (), (), text=text)
