"""Fixed-weight merges (docs/merge.md, "Methods"): one merged encoder, the target's own head.

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
from collections.abc import Mapping, Sequence
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


def all_vectors(ctx: MergeContext, keys: Sequence[str] = ENCODER_KEYS) -> list[StateDict]:
    """``[tau_t, tau_s1, ..., tau_sm]`` restricted to ``keys`` (the encoder tensors)."""
    return [select(v, keys) for v in (ctx.target_vector, *ctx.source_vectors)]


def base_encoder(ctx: MergeContext, base: str, keys: Sequence[str] = ENCODER_KEYS) -> StateDict:
    """theta0's ``keys`` tensors (the encoder's), or the target's own (``theta0 + tau_t``) with
    ``base: target``."""
    theta0 = select(ctx.theta0, keys)
    return add(theta0, select(ctx.target_vector, keys)) if base == "target" else theta0


MERGED_KEYS: dict[str, tuple[str, ...]] = {
    "encoder": tuple(ENCODER_KEYS),
    "all": (*ENCODER_KEYS, *HEAD_KEYS),
    "pred_head": HEAD_KEYS,
}
"""The tensors each ``merged`` setting merges (the reference's ``infer_parameter_names`` of
``mil_encoder``, ``all`` and ``pred_head``)."""


def target_head(ctx: MergeContext) -> StateDict:
    """The target model's trained head, ``theta0 + tau_t`` on the ``pred_head`` tensors."""
    return add(select(ctx.theta0, HEAD_KEYS), select(ctx.target_vector, HEAD_KEYS))


class _Fixed(MergeMethod):
    """A fixed merged model: ``base + merged_vector`` on the ``merged`` tensors (the encoder by
    default), every other tensor the target model's own (``theta0 + tau_t``), as the reference's
    ``MergedModel`` fills the tensors it does not merge; or a new trained head (``head: trained``)."""

    settings_class: ClassVar[type] = FixedSettings
    files: ClassVar[Mapping[str, tuple[str, ...]]] = {"head.safetensors": ("pred_head",)}

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        s = self.settings(config)
        if s.head == "trained" and s.merged != "encoder":
            raise ConfigError(
                f"{self.name}: head: trained replaces the head that merged: {s.merged} merges",
                hint="drop --option head=trained, or use --option merged=encoder",
            )

    @abc.abstractmethod
    def merged_vector(self, ctx: MergeContext, keys: Sequence[str]) -> StateDict:
        """The task vector added to the base on the ``keys`` tensors."""

    def build(self, ctx: MergeContext) -> FrozenEncoderHead:
        settings = self.settings(ctx.config)
        keys = MERGED_KEYS[settings.merged]
        target = add(select(ctx.theta0, MERGED_KEYS["all"]), select(ctx.target_vector, MERGED_KEYS["all"]))
        merged = {**target, **add(base_encoder(ctx, settings.base, keys), self.merged_vector(ctx, keys))}
        return FrozenEncoderHead(
            select(merged, ENCODER_KEYS),
            dim_emb=ctx.model_config.dim_emb,
            time_bins=ctx.model_config.time_bins,
            dropout=ctx.model_config.dropout,
            head=select(merged, HEAD_KEYS) if settings.head == "target" else None,
        )


class ModelAverage(_Fixed):
    name = "model-avg"
    description = "theta0 + mean of the target and source task vectors (= average of the models); target head"
    reference = "Wortsman et al., Model soups, ICML 2022; STEPH paper baseline 'Model Avg.'"

    def merged_vector(self, ctx: MergeContext, keys: Sequence[str]) -> StateDict:
        return mean(all_vectors(ctx, keys))


class TaskArithmetic(_Fixed):
    name = "task-arithmetic"
    description = "theta0 + scale * sum of the task vectors (options.scale, default 0.3); target head"
    reference = "Ilharco et al., Editing models with task arithmetic, ICLR 2023"
    settings_class = TaskArithmeticSettings

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        s = self.settings(config)
        check_coefficients(s.coefficients, n_sources, self.name)
        if s.coefficients is not None and s.scale != TaskArithmeticSettings().scale:
            raise ConfigError(
                f"{self.name}: scale has no effect with coefficients", hint="drop --option scale"
            )

    def merged_vector(self, ctx: MergeContext, keys: Sequence[str]) -> StateDict:
        """``scale sum_j tau_j``, or ``sum_j c_j tau_j`` with ``coefficients``."""
        vectors, s = all_vectors(ctx, keys), self.settings(ctx.config)
        if s.coefficients is not None:
            return weighted_sum(vectors, list(s.coefficients))
        return scale(weighted_sum(vectors, [1.0] * len(vectors)), s.scale)


class Ties(_Fixed):
    name = "ties"
    description = "TIES-merging: trim (kthvalue, >=), elect sign, disjoint mean, times scale; target head"
    reference = "Yadav et al., TIES-Merging, NeurIPS 2023"
    settings_class = TiesSettings

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        check_density(self.settings(config).density, self.name)

    def merged_vector(self, ctx: MergeContext, keys: Sequence[str]) -> StateDict:
        s = self.settings(ctx.config)
        return scale(ties_merge(all_vectors(ctx, keys), keys=keys, density=s.density, reduce="mean"), s.scale)


class IsoC(_Fixed):
    name = "iso-c"
    description = "Iso-C: sum of the task vectors with a flat spectrum (mean singular value), times scale"
    reference = "Marczak et al., No Task Left Behind: Isotropic Model Merging, ICML 2025"
    settings_class = ScaledSettings

    def merged_vector(self, ctx: MergeContext, keys: Sequence[str]) -> StateDict:
        return scale(iso_merge(all_vectors(ctx, keys), keys, "iso-c"), self.settings(ctx.config).scale)


class IsoCTS(_Fixed):
    name = "iso-cts"
    description = "Iso-CTS: common + task-specific singular subspaces with a flat spectrum, times scale"
    reference = "Marczak et al., No Task Left Behind: Isotropic Model Merging, ICML 2025"
    settings_class = IsoCtsSettings

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        check_fraction(self.settings(config).common_fraction, self.name)

    def merged_vector(self, ctx: MergeContext, keys: Sequence[str]) -> StateDict:
        s = self.settings(ctx.config)
        return scale(iso_merge(all_vectors(ctx, keys), keys, "iso-cts", s.common_fraction), s.scale)


def check_fraction(fraction: float, method: str) -> None:
    """Refuse an Iso-CTS common fraction outside [0, 1]."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(
            f"merge.options.common_fraction = {fraction} for {method}: must be in [0, 1]",
            hint="e.g. --option common_fraction=0.8",
        )


def check_coefficients(coefficients: Sequence[float] | None, n_sources: int, method: str) -> None:
    """Refuse per-vector coefficients whose count is not the number of task vectors, 1 + m."""
    if coefficients is not None and len(coefficients) != n_sources + 1:
        raise ConfigError(
            f"{method}: {len(coefficients)} coefficients for {n_sources + 1} task vectors",
            hint="give one per task vector, the target's first, then the sources in --sources order, "
            "e.g. --option coefficients=[0.5,0.3,0.2]",
        )
