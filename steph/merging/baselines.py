"""Fixed-weight merges (STEPH_SPEC section 7): one merged encoder, the target's own head.

Each merges the target's same-fold task vector and the m source task vectors,
``T = {tau_t, tau_s1, ..., tau_sm}`` (N = m + 1), over the 8 ABMIL encoder tensors, and adds
the result to the base, ``theta0`` (``base: theta0``, the default) or the target's own encoder
``theta_t = theta0 + tau_t`` (``base: target``, the reference's ``base_parameters_from``):

- ``model-avg``:        theta_enc = base + (1/N) sum_{tau in T} tau  (the average of the N models)
- ``task-arithmetic``:  theta_enc = base + scale * sum_{tau in T} tau  (scale 0.3 by default)
- ``ties``:             theta_enc = base + scale * TIES(T): keep the ``floor(density P) + 1``
  largest magnitudes of each vector (the reference's kthvalue, :func:`steph.task_vectors.trim`),
  elect signs, disjoint mean (Yadav et al., NeurIPS 2023)
- ``iso-c``:            theta_enc = base + scale * Iso-C(T) (:mod:`steph.merging.iso`, Marczak et al., ICML 2025)
- ``iso-cts``:          theta_enc = base + scale * Iso-CTS(T), common fraction 0.8

As in the reference's ``MergedModel`` with fixed weights (``FIX``, ``FIX-avg``), which sets
``task_ari_module_to_retrain = None`` and fills every non-merged parameter from the target
model, the model is **not trained**: the prediction head is the target's own trained head,
``theta0[pred_head] + tau_t[pred_head]``. ``head: trained`` (a stephctl option, a departure
from the reference) instead trains a new head on the target's training split with the usual
protocol, for a merged encoder whose features the target's head was not fitted to.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import ClassVar

from ..config.merge import MergeConfig
from ..errors import ConfigError
from ..models.abmil import ENCODER_KEYS
from ..task_vectors import StateDict, add, mean, scale, select, ties_merge, weighted_sum
from .base import MergeContext, MergeMethod
from .iso import iso_merge
from .method_settings import (
    FixedSettings,
    IsoCtsSettings,
    ScaledSettings,
    TaskArithmeticSettings,
    TiesSettings,
)
from .modules import FrozenEncoderHead

HEAD_KEYS = ("pred_head.weight", "pred_head.bias")


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


def base_encoder(ctx: MergeContext, base: str) -> StateDict:
    """theta0's encoder tensors, or the target's own (``theta0 + tau_t``) with ``base: target``."""
    theta0 = select(ctx.theta0, ENCODER_KEYS)
    return add(theta0, select(ctx.target_vector, ENCODER_KEYS)) if base == "target" else theta0


def target_head(ctx: MergeContext) -> StateDict:
    """The target model's trained head, ``theta0 + tau_t`` on the ``pred_head`` tensors."""
    return add(select(ctx.theta0, HEAD_KEYS), select(ctx.target_vector, HEAD_KEYS))


class _Fixed(MergeMethod):
    """A fixed merged encoder (``base + merged_vector``) and the target's head (or a new one)."""

    settings_class: ClassVar[type] = FixedSettings
    files: ClassVar[Mapping[str, tuple[str, ...]]] = {"head.safetensors": ("pred_head",)}

    @abc.abstractmethod
    def merged_vector(self, ctx: MergeContext) -> StateDict:
        """The task vector added to the base (encoder tensors only)."""

    def build(self, ctx: MergeContext) -> FrozenEncoderHead:
        settings = self.settings(ctx.config)
        encoder = add(base_encoder(ctx, settings.base), self.merged_vector(ctx))
        return FrozenEncoderHead(
            encoder,
            dim_emb=ctx.model_config.dim_emb,
            time_bins=ctx.model_config.time_bins,
            dropout=ctx.model_config.dropout,
            head=target_head(ctx) if settings.head == "target" else None,
        )


class ModelAverage(_Fixed):
    name = "model-avg"
    description = "theta0 + mean of the target and source task vectors (= average of the models); target head"
    reference = "Wortsman et al., Model soups, ICML 2022; STEPH paper baseline 'Model Avg.'"

    def merged_vector(self, ctx: MergeContext) -> StateDict:
        return mean(all_vectors(ctx))


class TaskArithmetic(_Fixed):
    name = "task-arithmetic"
    description = "theta0 + scale * sum of the task vectors (options.scale, default 0.3); target head"
    reference = "Ilharco et al., Editing models with task arithmetic, ICLR 2023"
    settings_class = TaskArithmeticSettings

    def merged_vector(self, ctx: MergeContext) -> StateDict:
        vectors = all_vectors(ctx)
        return scale(weighted_sum(vectors, [1.0] * len(vectors)), self.settings(ctx.config).scale)


class Ties(_Fixed):
    name = "ties"
    description = "TIES-merging: trim (kthvalue, >=), elect sign, disjoint mean, times scale; target head"
    reference = "Yadav et al., TIES-Merging, NeurIPS 2023"
    settings_class = TiesSettings

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        check_density(self.settings(config).density, self.name)

    def merged_vector(self, ctx: MergeContext) -> StateDict:
        s = self.settings(ctx.config)
        return scale(
            ties_merge(all_vectors(ctx), keys=ENCODER_KEYS, density=s.density, reduce="mean"), s.scale
        )


class IsoC(_Fixed):
    name = "iso-c"
    description = "Iso-C: sum of the task vectors with a flat spectrum (mean singular value), times scale"
    reference = "Marczak et al., No Task Left Behind: Isotropic Model Merging, ICML 2025"
    settings_class = ScaledSettings

    def merged_vector(self, ctx: MergeContext) -> StateDict:
        return scale(iso_merge(all_vectors(ctx), ENCODER_KEYS, "iso-c"), self.settings(ctx.config).scale)


class IsoCTS(_Fixed):
    name = "iso-cts"
    description = "Iso-CTS: common + task-specific singular subspaces with a flat spectrum, times scale"
    reference = "Marczak et al., No Task Left Behind: Isotropic Model Merging, ICML 2025"
    settings_class = IsoCtsSettings

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        check_fraction(self.settings(config).common_fraction, self.name)

    def merged_vector(self, ctx: MergeContext) -> StateDict:
        s = self.settings(ctx.config)
        return scale(iso_merge(all_vectors(ctx), ENCODER_KEYS, "iso-cts", s.common_fraction), s.scale)


def check_fraction(fraction: float, method: str) -> None:
    """Refuse an Iso-CTS common fraction outside [0, 1]."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(
            f"merge.options.common_fraction = {fraction} for {method}: must be in [0, 1]",
            hint="e.g. --option common_fraction=0.8",
        )
