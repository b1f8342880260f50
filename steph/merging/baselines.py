"""Data-free merging baselines (STEPH_SPEC section 7): one merged encoder, a new trained head.

Each merges the target's same-fold task vector and the m source task vectors,
``T = {tau_t, tau_s1, ..., tau_sm}`` (N = m + 1), over the 8 ABMIL encoder tensors, and adds
the result to theta0:

- ``model-avg``:        theta_enc = theta0 + (1/N) sum_{tau in T} tau  (the average of the N models)
- ``task-arithmetic``:  theta_enc = theta0 + scale * sum_{tau in T} tau  (scale 0.3 by default)
- ``ties``:             theta_enc = theta0 + scale * TIES(T), TIES = trim to the top ``density``
  magnitudes of each vector, elect signs, disjoint mean (:func:`steph.task_vectors.ties_merge`)

The merged encoder is frozen. As in the reference (``task_ari_module_to_retrain: pred_head``),
every merged model gets a brand-new ``pred_head`` trained on the target's training split with
the usual protocol, since a survival head cannot be merged across cohorts meaningfully.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

from ..config.merge import MergeConfig
from ..errors import ConfigError
from ..models.abmil import ENCODER_KEYS
from ..task_vectors import StateDict, add, mean, scale, select, ties_merge, weighted_sum
from .base import MergeContext, MergeMethod
from .modules import FrozenEncoderHead


def check_density(density: float, method: str) -> None:
    """Refuse a TIES density outside (0, 1]."""
    if not 0.0 < density <= 1.0:
        raise ConfigError(
            f"merge.options.density = {density} for {method}: must be in (0, 1]",
            hint="the fraction of each task vector's entries TIES keeps, e.g. --option density=0.2",
        )


def all_vectors(ctx: MergeContext) -> list[StateDict]:
    """``[tau_t, tau_s1, ..., tau_sm]`` restricted to the encoder tensors."""
    return [select(v, ENCODER_KEYS) for v in (ctx.target_vector, *ctx.source_vectors)]


class _DataFree(MergeMethod):
    """A fixed merged encoder (``theta0 + merged_vector``) and a new trained head."""

    files: ClassVar[Mapping[str, tuple[str, ...]]] = {"head.safetensors": ("pred_head",)}

    @abc.abstractmethod
    def merged_vector(self, ctx: MergeContext) -> StateDict:
        """The task vector added to theta0 (encoder tensors only)."""

    def build(self, ctx: MergeContext) -> FrozenEncoderHead:
        encoder = add(select(ctx.theta0, ENCODER_KEYS), self.merged_vector(ctx))
        return FrozenEncoderHead(
            encoder,
            dim_emb=ctx.model_config.dim_emb,
            time_bins=ctx.model_config.time_bins,
            dropout=ctx.model_config.dropout,
        )


class ModelAverage(_DataFree):
    name = "model-avg"
    description = "theta0 + mean of the target and source task vectors (= average of the models); new head"
    reference = "Wortsman et al., Model soups, ICML 2022; STEPH paper baseline 'Model Avg.'"

    def merged_vector(self, ctx: MergeContext) -> StateDict:
        return mean(all_vectors(ctx))


class TaskArithmetic(_DataFree):
    name = "task-arithmetic"
    description = "theta0 + scale * sum of the task vectors (options.scale, default 0.3); new head"
    reference = "Ilharco et al., Editing models with task arithmetic, ICLR 2023"
    option_defaults: ClassVar[Mapping[str, Any]] = {"scale": 0.3}

    def merged_vector(self, ctx: MergeContext) -> StateDict:
        vectors = all_vectors(ctx)
        return scale(weighted_sum(vectors, [1.0] * len(vectors)), self.options(ctx.config)["scale"])


class Ties(_DataFree):
    name = "ties"
    description = "TIES-merging: trim to top density, elect sign, disjoint mean, times scale; new head"
    reference = "Yadav et al., TIES-Merging, NeurIPS 2023"
    option_defaults: ClassVar[Mapping[str, Any]] = {"density": 0.2, "scale": 1.0}

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        check_density(self.options(config)["density"], self.name)

    def merged_vector(self, ctx: MergeContext) -> StateDict:
        opts = self.options(ctx.config)
        return scale(ties_merge(all_vectors(ctx), density=opts["density"], reduce="mean"), opts["scale"])
