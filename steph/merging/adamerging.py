"""AdaMerging-style baselines: one trainable coefficient per task vector, learned with a new head.

With N task vectors ``tau_1..tau_N`` (the target's same-fold vector first, then the sources):

    theta_enc = theta0 + sum_j c_j tau_j,      c_j initialised to 1/N

The coefficients and a new ``pred_head`` are trained jointly on the target's training split with
SurvMLE plus the reference's z-loss on the coefficients, ``gamma * (log sum_j exp c_j)^2``
(``merge.gamma``). This is the reference's ``MergedModel`` in its ``ADA`` mode (STEPH_SPEC
section 7): supervised by the survival loss, not by AdaMerging's entropy on unlabeled data.

``ties-adamerging`` first replaces each source vector by its pairwise TIES merge with the
target's, as the reference's ``preprocess_task_vectors='ties_merging'`` does (top ``density`` of
each of the two vectors, elected sign, **sum** of the agreeing entries), and learns coefficients
over ``[tau_t, TIES(tau_t, tau_s1), ..., TIES(tau_t, tau_sm)]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..config.merge import MergeConfig
from ..models.abmil import ENCODER_KEYS, encode
from ..task_vectors import StateDict, select, ties_merge
from ..training.loop import ModelOutput
from .base import MergeContext, MergeMethod, Table
from .baselines import all_vectors, check_density
from .modules import VectorStack


class AdaMergingModel(nn.Module):
    """``theta0 + sum_j c_j tau_j`` with trainable ``coefficients [N]`` and a new head."""

    def __init__(
        self,
        theta0: Mapping[str, Tensor],
        vectors: Sequence[Mapping[str, Tensor]],
        *,
        dim_emb: int,
        time_bins: int,
        dropout: float,
        gamma: float,
    ) -> None:
        super().__init__()
        self.stack = VectorStack(theta0, vectors)
        self.coefficients = nn.Parameter(torch.full((len(vectors),), 1.0 / len(vectors)))
        self.pred_head = nn.Linear(dim_emb, time_bins)
        self.dropout = dropout
        self.gamma = gamma

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        params = self.stack.merge(self.coefficients)
        z = encode(params, x, mask, dropout=self.dropout, training=self.training)
        z_loss = torch.logsumexp(self.coefficients, dim=0).square()
        return ModelOutput(self.pred_head(z), self.gamma * z_loss)


class AdaMerging(MergeMethod):
    name = "adamerging"
    description = "one trainable coefficient per task vector (init 1/N) + new head, SurvMLE + z-loss"
    reference = "Yang et al., AdaMerging, ICLR 2024; STEPH paper baseline 'AdaMerging'"
    config_fields = ("gamma",)
    files: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "coefficients.safetensors": ("coefficients",),
        "head.safetensors": ("pred_head",),
    }

    def vectors(self, ctx: MergeContext) -> list[StateDict]:
        return all_vectors(ctx)

    def vector_names(self, ctx: MergeContext) -> list[str]:
        return [
            f"{ctx.target}/fold_{ctx.fold}",
            *(f"{s}/fold_{ctx.config.source_fold}" for s in ctx.source_names),
        ]

    def build(self, ctx: MergeContext) -> AdaMergingModel:
        return AdaMergingModel(
            select(ctx.theta0, ENCODER_KEYS),
            self.vectors(ctx),
            dim_emb=ctx.model_config.dim_emb,
            time_bins=ctx.model_config.time_bins,
            dropout=ctx.model_config.dropout,
            gamma=ctx.config.gamma,
        )

    def tables(
        self, model: nn.Module, ids: Sequence[str], extras: Mapping[str, Tensor], ctx: MergeContext
    ) -> dict[str, Table]:
        """``task_weights.csv``: the learned coefficient of each task vector."""
        assert isinstance(model, AdaMergingModel)
        rows: list[list[Any]] = [
            [name, float(c)]
            for name, c in zip(self.vector_names(ctx), model.coefficients.detach().cpu(), strict=True)
        ]
        return {"task_weights.csv": (["task_vector", "weight"], rows)}


class TiesAdaMerging(AdaMerging):
    name = "ties-adamerging"
    description = "AdaMerging over pairwise TIES(target, source) vectors (top density, sum of agreeing)"
    reference = "STEPH paper baseline 'TIES AM'; Yadav et al., NeurIPS 2023 + Yang et al., ICLR 2024"
    option_defaults: ClassVar[Mapping[str, Any]] = {"density": 0.2}

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        check_density(self.options(config)["density"], self.name)

    def vectors(self, ctx: MergeContext) -> list[StateDict]:
        density = self.options(ctx.config)["density"]
        target, *sources = all_vectors(ctx)
        return [target, *(ties_merge([target, s], density=density, reduce="sum") for s in sources)]
