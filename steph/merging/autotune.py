"""``merge.gamma: auto``: choose gamma by an inner cross-validation on the target's training split.

The paper picks gamma per cancer from {0.005, 0.05} "by cross-validation". For one target fold,
its training patients (never its test patients) are split into ``merge.inner_folds`` folds,
stratified by event (patients shuffled with ``train.seed``, then dealt out round-robin within
the events and within the censored). For every candidate ``g`` of ``merge.gamma_grid`` the
method is built and trained on all inner folds but one and scored on the one left out, each
time from the same seed:

    score(g) = (1/F) sum_f  C_Harrell(inner validation fold f | model trained with gamma = g)

(a fold whose C-index is undefined is left out of the mean), and ``gamma = argmax_g score(g)``,
the first candidate on ties. The method is then trained on the whole training split with that
gamma. The candidates, the per-fold scores and the choice go into the run's ``meta.json``.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..config.merge import MergeConfig
from ..metrics.harrell import harrell_c
from ..runtime import seed_everything
from ..survival import SurvivalTargets, risk_score
from ..training.loop import predict
from .base import MergeContext, MergeMethod
from .settings import AUTO

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GammaChoice:
    """The outcome of the inner cross-validation."""

    gamma: float
    grid: list[float]
    scores: dict[str, list[float | None]]
    """``str(g)`` -> the C-index of every inner validation fold (None = undefined)."""

    def to_dict(self) -> dict[str, Any]:
        means = {g: _mean(v) for g, v in self.scores.items()}
        return {"chosen": self.gamma, "grid": self.grid, "inner_c_index": self.scores, "mean": means}


def inner_folds(train: SurvivalTargets, n_folds: int, seed: int) -> list[list[int]]:
    """Indices into ``train`` of each inner fold, stratified by event (module docstring)."""
    rng = random.Random(seed)
    folds: list[list[int]] = [[] for _ in range(n_folds)]
    slot = 0
    for event in (1, 0):
        members = [i for i in range(len(train)) if int(train.events[i]) == event]
        rng.shuffle(members)
        for i in members:
            folds[slot % n_folds].append(i)
            slot += 1
    return [sorted(f) for f in folds]


def subset(train: SurvivalTargets, index: list[int]) -> SurvivalTargets:
    return SurvivalTargets(
        ids=[train.ids[i] for i in index],
        times=train.times[index],
        events=train.events[index],
        bins=train.bins[index],
    )


def choose_gamma(
    method: MergeMethod,
    ctx: MergeContext,
    grid: list[float],
    n_folds: int,
    *,
    max_batch_patches: int = 0,
) -> GammaChoice:
    """Run the inner cross-validation of gamma for one target fold (module docstring).

    Raises:
        ValueError: ``ctx`` has no training data, or fewer training patients than folds.
    """
    if ctx.train is None or ctx.bags is None:
        raise ValueError("choose_gamma needs the target's training data in the context")
    if len(ctx.train) < n_folds:
        raise ValueError(f"{len(ctx.train)} training patients cannot make {n_folds} inner folds")
    folds = inner_folds(ctx.train, n_folds, ctx.seed)
    scores: dict[str, list[float | None]] = {}
    for gamma in grid:
        values: list[float | None] = []
        for k, held in enumerate(folds):
            rest = [i for j, f in enumerate(folds) if j != k for i in f]
            inner = replace(ctx, config=with_gamma(ctx.config, float(gamma)), train=subset(ctx.train, rest))
            seed_everything(ctx.seed)
            model = method.build(inner)
            method.train(model, inner)
            val = subset(ctx.train, held)
            hazards, _ = predict(
                model,
                val.ids,
                ctx.bags,
                device=ctx.device,
                max_batch_patches=max_batch_patches,
                precision=ctx.fit_settings.precision,
            )
            conc = harrell_c(
                np.asarray(val.times, dtype=np.float64),
                np.asarray(val.events, dtype=np.int64),
                risk_score(hazards).numpy(),
            )
            values.append(conc.value if conc.defined else None)
        scores[str(float(gamma))] = values
        log.info("gamma %g: inner C-index %s", gamma, values)
    means = [_mean(scores[str(float(g))]) for g in grid]
    best = max(range(len(grid)), key=lambda i: (-math.inf if math.isnan(means[i]) else means[i], -i))
    return GammaChoice(float(grid[best]), [float(g) for g in grid], scores)


def _mean(values: list[float | None]) -> float:
    clean = [v for v in values if v is not None]
    return float(np.mean(clean)) if clean else math.nan


def with_gamma(merge: MergeConfig, gamma: float) -> MergeConfig:
    """``merge`` with ``gamma`` in ``merge.options`` (a method's block is folded in already)."""
    return replace(merge, options={**merge.options, "gamma": gamma})


def tune(
    method: MergeMethod, ctx: MergeContext, *, max_batch_patches: int = 0
) -> tuple[MergeContext, GammaChoice | None]:
    """``ctx`` with gamma chosen by :func:`choose_gamma` when the method's settings say
    ``gamma: auto`` (``ctx.config`` is one method's, its block folded in), and the choice;
    ``ctx`` unchanged and None otherwise."""
    if getattr(method.settings(ctx.config), "gamma", None) != AUTO:
        return ctx, None
    merge = ctx.config
    choice = choose_gamma(
        method, ctx, list(merge.gamma_grid), merge.inner_folds, max_batch_patches=max_batch_patches
    )
    log.info(
        "merge %s %s fold %d: gamma %g chosen by inner cross-validation",
        ctx.target,
        method.name,
        ctx.fold,
        choice.gamma,
    )
    return replace(ctx, config=with_gamma(merge, choice.gamma)), choice
