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
from collections.abc import Sequence

from ..models.abmil import ENCODER_KEYS
from ..task_vectors import StateDict, add, mean, scale, select, ties_merge, weighted_sum
from .base import MergeContext, MergeMethod
from .catalog import (
    FixedSpec,
    IsoCSpec,
    IsoCTSSpec,
    ModelAverageSpec,
    TaskArithmeticSpec,
    TiesSpec,
)
from .iso import iso_merge
from .modules import FrozenEncoderHead

HEAD_KEYS = ("pred_head.weight", "pred_head.bias")


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


class _Fixed(FixedSpec, MergeMethod):
    """A fixed merged model: ``base + merged_vector`` on the ``merged`` tensors (the encoder by
    default), every other tensor the target model's own (``theta0 + tau_t``), as the reference's
    ``MergedModel`` fills the tensors it does not merge; or a new trained head (``head: trained``)."""

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


class ModelAverage(ModelAverageSpec, _Fixed):
    """The model of :class:`~steph.merging.catalog.ModelAverageSpec`."""

    def merged_vector(self, ctx: MergeContext, keys: Sequence[str]) -> StateDict:
        return mean(all_vectors(ctx, keys))


class TaskArithmetic(TaskArithmeticSpec, _Fixed):
    """The model of :class:`~steph.merging.catalog.TaskArithmeticSpec`."""

    def merged_vector(self, ctx: MergeContext, keys: Sequence[str]) -> StateDict:
        """``scale sum_j tau_j``, or ``sum_j c_j tau_j`` with ``coefficients``."""
        vectors, s = all_vectors(ctx, keys), self.settings(ctx.config)
        if s.coefficients is not None:
            return weighted_sum(vectors, list(s.coefficients))
        return scale(weighted_sum(vectors, [1.0] * len(vectors)), s.scale)


class Ties(TiesSpec, _Fixed):
    """The model of :class:`~steph.merging.catalog.TiesSpec`."""

    def merged_vector(self, ctx: MergeContext, keys: Sequence[str]) -> StateDict:
        s = self.settings(ctx.config)
        return scale(ties_merge(all_vectors(ctx, keys), keys=keys, density=s.density, reduce="mean"), s.scale)


class IsoC(IsoCSpec, _Fixed):
    """The model of :class:`~steph.merging.catalog.IsoCSpec`."""

    def merged_vector(self, ctx: MergeContext, keys: Sequence[str]) -> StateDict:
        return scale(iso_merge(all_vectors(ctx, keys), keys, "iso-c"), self.settings(ctx.config).scale)


class IsoCTS(IsoCTSSpec, _Fixed):
    """The model of :class:`~steph.merging.catalog.IsoCTSSpec`."""

    def merged_vector(self, ctx: MergeContext, keys: Sequence[str]) -> StateDict:
        s = self.settings(ctx.config)
        return scale(iso_merge(all_vectors(ctx, keys), keys, "iso-cts", s.common_fraction), s.scale)
