"""Representation Surgery on AdaMerging: the paper's "Surgery AM".

Yang et al., Representation Surgery for Multi-Task Model Merging, ICML 2024: the merged model's
representation ``z`` of a bag drifts from the one the task's own model gives, ``z_t``. A light
module removes an estimate of that bias,

    Surgery(z) = W_u ReLU(W_d z),   W_d: E -> r,  W_u: r -> E  (rank r = 16, no biases)
    z_hat      = z - Surgery(z)

trained to pull ``z_hat`` onto the target model's own representation (the alignment objective)

    L_align = mean_b (1/E) || z_hat_b - z_t,b ||_1

where ``z_t`` is the frozen target encoder ``theta0 + tau_t``'s bag embedding, computed without
dropout. The merge underneath is :mod:`steph.merging.adamerging` (global coefficients, or
per-patient ones with ``hypernet: true``); the head reads ``z_hat``. The objective is

    SurvMLE + gamma * coefficient regulariser + align_weight * L_align

and every part is trained jointly on the target's training split. As in the official
Representation Surgery code, the L1 distance is averaged over the E dimensions (so
``align_weight`` does not scale with the embedding width) and ``W_u`` starts at zero
(``z_hat = z`` at the start), ``W_d`` with PyTorch's default init. The departure is the
training: the official code trains only the surgery modules, on the unlabeled L1 objective, on
the test data; here the coefficients (or the hypernetwork), the new head and the surgery module
are trained jointly with SurvMLE on the target's training split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..models.abmil import ENCODER_KEYS, bag_count, encode
from ..task_vectors import add, select
from ..training.loop import ModelOutput
from .adamerging import AdaMerging, AdaMergingModel, regularise_coefficients
from .base import MergeContext
from .baselines import base_encoder
from .catalog import SurgeryAdaMergingSpec
from .modules import FrozenState


class Surgery(nn.Module):
    """``z - W_u ReLU(W_d z)``."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, z: Tensor) -> Tensor:
        correction: Tensor = self.up(self.down(z).relu())
        return z - correction


def alignment_loss(z_hat: Tensor, z_target: Tensor) -> Tensor:
    """``mean_b (1/E) ||z_hat_b - z_t,b||_1``."""
    return (z_hat - z_target).abs().mean()


class SurgeryModel(AdaMergingModel):
    """AdaMerging plus a surgery module aligned with the frozen target encoder's embeddings."""

    def __init__(
        self,
        base: Mapping[str, Tensor],
        vectors: Sequence[Mapping[str, Tensor]],
        target_encoder: Mapping[str, Tensor],
        *,
        rank: int,
        align_weight: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(base, vectors, **kwargs)
        self.target_encoder = FrozenState(select(target_encoder, ENCODER_KEYS))
        self.surgery = Surgery(self.pred_head.in_features, rank)
        self.align_weight = align_weight

    @torch.no_grad()
    def target_embedding(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return encode(self.target_encoder.as_dict(), x, mask, training=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        c = self.weights(x, mask)
        z_hat = self.surgery(self.represent(x, mask, c))
        align = alignment_loss(z_hat, self.target_embedding(x, mask))
        aux = regularise_coefficients(c, self.top_k, self.gamma) + self.align_weight * align
        extras = {"coefficients": c.detach().expand(bag_count(x, mask), -1)}
        return ModelOutput(self.pred_head(z_hat), aux, extras)


class SurgeryAdaMerging(SurgeryAdaMergingSpec, AdaMerging):
    """The model of :class:`~steph.merging.catalog.SurgeryAdaMergingSpec`."""

    stacked_model = None  # its surgery modules are not stacked: each fold trains alone

    def build(self, ctx: MergeContext) -> SurgeryModel:
        s = self.settings(ctx.config)
        target = add(select(ctx.theta0, ENCODER_KEYS), select(ctx.target_vector, ENCODER_KEYS))
        return SurgeryModel(
            base_encoder(ctx, s.base),
            self.vectors(ctx),
            target,
            rank=s.rank,
            align_weight=s.align_weight,
            **self.model_kwargs(ctx),
        )
