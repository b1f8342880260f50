"""STEPH: sparse task-vector mixup with hypernetworks (docs/merge.md, "STEPH in plain words").

For a bag X, the hypernetwork (:mod:`steph.merging.hypernet`) gives aggregation weights
``w(X) in R^m_{>=0}`` and mixup coefficients ``lambda(X) in (0, 1]^m``; ``S(X)`` is the set of the
``top_k`` largest w. The bag's encoder is merged from theta0, the target's task vector tau_t and
the m source task vectors tau_s:

    theta_enc(X) = theta0 + sum_{i in S(X)} w_i (lambda_i tau_t + (1 - lambda_i) tau_{s_i})
                 = theta0 + a(X) tau_t + sum_i c_i(X) tau_{s_i},
    a = sum_{i in S} w_i lambda_i,   c_i = [i in S] w_i (1 - lambda_i)

for the 8 ABMIL encoder tensors only. The second form is what runs: the coefficients ``[B, 1+m]``
of a whole batch times the stacked vectors ``[1+m, P]`` in one matrix product, then the ABMIL
encoder with per-bag weights (batched matmuls) and a new trainable ``pred_head``. theta0 and
every tau are frozen. The training objective adds, per batch of B bags (n_b = |S_b|),

    gamma * mean_b [ (log sum_{i=1}^m exp w_bi)^2 + (1/n_b) sum_{i in S_b} w_bi ]
    + beta * mean_b [ (1/n_b) sum_{i in S_b} lambda_bi^2 ]

Ablations (the paper's ablation table): ``mix`` = ``fixed`` (lambda = ``fixed_lambda`` for every
source; 0 is exactly 0 here, the reference clamps it to 1e-9, an invisible difference in float32)
or ``global`` (one trainable vector r, initialised 0, lambda = 1/(1 + max(r, 0))); ``weights`` =
``global`` (one trainable vector, initialised 1/m, w = max(., 0)); ``sparse`` = False (all m
sources, n_b = m, and the aggregation loss is the z-loss alone, as the reference's
``calc_merge_weight_loss`` without top-k). With a fixed lambda the beta term is a constant and is
left out. Reference variants: ``mix: fnn`` (H_mix with its own patch embedding), ``output``
(relu / sigmoid / softplus on w), ``base: target`` (theta0 replaced by the target's own encoder
theta0 + tau_t, the reference's ``base_parameters_from: target``), ``fixed_lambdas`` (one fixed
lambda per mixture, ``initial_lambda_t``), ``clamp_weights`` (the mixtures merged with
``min(max(w_i, 0), 1)``, the top-k and the regulariser on w unclamped, ``task_ari_clamp_weights``)
and ``target_as_source`` (tau_t is also mixture 0's source, ``task_ari_src_exlude_target:
false``: m + 1 mixtures).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from ..layout import COEFFICIENTS_FILE
from ..models.abmil import (
    Segments,
    as_dtype,
    bag_count,
    encode,
    packed_segments,
    weight_groups,
)
from ..models.closed_form import closed_form
from ..training.loop import ModelOutput
from .base import MergeContext, MergeMethod, StackedModel, Table
from .catalog import StephSpec
from .hypernet import Hypernetwork, StackedHypernetwork
from .method_settings import StephSettings
from .modules import StackedVectors, VectorStack

_DEFAULTS = StephSettings()


@dataclass(frozen=True)
class RegulariserWeights:
    """The regulariser's ``gamma`` and ``beta`` and which of its terms apply: the mean selected
    w (``sparse``) and the lambda term (``learns_lambda``)."""

    gamma: float
    beta: float
    sparse: bool
    learns_lambda: bool


def regulariser_weights(settings: StephSettings, scale: int = 1) -> RegulariserWeights:
    """The regulariser's weights of ``settings``, ``gamma`` and ``beta`` times ``scale`` (the
    units of a stacked batch: :func:`regulariser_terms` averages over all its bags, each unit's
    regulariser is the mean over its own)."""
    gamma = settings.gamma
    if isinstance(gamma, str):  # "auto" is replaced by its chosen value before a model is built
        raise ValueError("gamma 'auto' reached training unresolved (steph.merging.autotune chooses it)")
    return RegulariserWeights(
        float(gamma) * scale, settings.beta * scale, settings.sparse, settings.learns_lambda
    )


def select_top(w: Tensor, settings: StephSettings) -> Tensor:
    """Boolean ``[B, m]``: the top-k weights of each bag (every source when not sparse)."""
    if not settings.sparse:
        return torch.ones_like(w, dtype=torch.bool)
    index = w.topk(settings.top_k, dim=1).indices
    return torch.zeros_like(w, dtype=torch.bool).scatter_(1, index, True)


def mix_coefficients(
    settings: StephSettings,
    heads: tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None],
    per_bag: Callable[[Tensor], Tensor],
    like: Tensor,
    shape: tuple[int, int],
) -> tuple[Tensor, Tensor]:
    """Aggregation weights ``w`` and target coefficients ``lambda`` ``[B, m]`` from the
    hypernetwork's ``w`` and ``r`` and the global vectors (``heads``, each None where the model
    has none), ``per_bag`` spreading a global vector to the bags' rows:

        w = max(global_w, 0) or w(X);   lambda = 1 / (1 + max(global_r, 0)), 1 / (1 + r(X)),
        the fixed lambdas, or the fixed lambda (in ``like``'s dtype and device)."""
    w_net, r_net, global_w, global_r = heads
    if global_w is not None:
        w = per_bag(global_w.clamp(min=0.0))
    else:
        assert w_net is not None
        w = w_net
    if global_r is not None:
        lam = per_bag(1.0 / (1.0 + global_r.clamp(min=0.0)))
    elif r_net is not None:
        lam = 1.0 / (1.0 + r_net)
    elif settings.fixed_lambdas is not None:
        lam = torch.tensor(settings.fixed_lambdas, dtype=like.dtype, device=like.device).expand(*shape)
    else:
        lam = torch.full(shape, settings.fixed_lambda, dtype=like.dtype, device=like.device)
    return w, lam


def regulariser_terms(
    w: Tensor,
    lam: Tensor,
    selected: Tensor,
    weights: RegulariserWeights,
    *,
    gradient: bool,
    rows_out: list[Tensor] | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """STEPH's regulariser over B bags and its gradients in ``w`` and ``lambda`` (each ``[B, m]``;
    ``selected``: the top-k mask as floats), in float32. With ``s_bj = selected_bj / n_b`` and
    ``LSE_b = log sum_j exp w_bj``:

        L = gamma / B sum_b [ LSE_b^2 + [sparse] sum_j s_bj w_bj ] + [learns lambda] beta / B sum_bj s_bj lambda_bj^2
        dL/dw_bj = gamma / B [ 2 LSE_b softmax(w_b)_j + [sparse] s_bj ]
        dL/dlambda_bj = [learns lambda] 2 beta / B s_bj lambda_bj

    The gradients are None unless ``gradient`` (and the lambda one without the lambda term).
    ``rows_out`` receives each bag's term of the sum (detached), for stacked units' own losses."""
    w32, lam32 = w.float(), lam.float()
    share = selected / selected.sum(dim=1, keepdim=True)
    scale = weights.gamma / w.shape[0]
    lse = torch.logsumexp(w32, dim=1, keepdim=True)
    if rows_out is not None:
        row = lse.square().squeeze(1)
        if weights.sparse:
            row = row + (w32 * share).sum(dim=1)
        row = scale * row
        if weights.learns_lambda:
            row = row + (weights.beta / w.shape[0]) * (lam32.square() * share).sum(dim=1)
        rows_out.append(row.detach())
        loss = row.sum()
    else:
        loss = lse.square().sum()
        if weights.sparse:
            loss = loss + (w32 * share).sum()
        loss = scale * loss
        if weights.learns_lambda:
            loss = loss + (weights.beta / w.shape[0]) * (lam32.square() * share).sum()
    if not gradient:
        return loss, None, None
    grad_w = torch.softmax(w32, dim=1) * (2.0 * scale * lse)
    if weights.sparse:
        grad_w = grad_w + scale * share
    grad_lam = (2.0 * weights.beta / w.shape[0]) * share * lam32 if weights.learns_lambda else None
    return loss, grad_w, grad_lam


class StephModel(nn.Module):
    """theta0 + per-bag sparse mixture of task vectors, a hypernetwork and a new head.

    ``forward(x [B, K, D], mask [B, K])`` returns a :class:`ModelOutput` with the logits
    ``[B, T]``, the regulariser as ``aux_loss`` and extras ``w``, ``lambda`` and ``selected``
    (each ``[B, m]``). It accepts packed bags (:func:`~steph.models.abmil.packed_bags`): the
    per-bag merged encoders then run as grouped matrix products over the pack.
    """

    packs_bags = True

    def __init__(
        self,
        theta0: Mapping[str, Tensor],
        target_vector: Mapping[str, Tensor],
        source_vectors: Sequence[Mapping[str, Tensor]],
        *,
        dim_in: int,
        dim_emb: int,
        time_bins: int,
        dropout: float,
        settings: StephSettings,
    ) -> None:
        super().__init__()
        self.settings = settings
        if settings.target_as_source:  # the reference's task_ari_src_exlude_target: false
            source_vectors = [target_vector, *source_vectors]
        self.n_sources = len(source_vectors)
        self.dropout = dropout
        base = dict(theta0)
        if settings.base == "target":
            base = {k: v + target_vector[k] if k in target_vector else v for k, v in theta0.items()}
        self.stack = VectorStack(base, [target_vector, *source_vectors])
        agg, mix = settings.weights == "hypernet", settings.mix in ("hypernet", "fnn")
        self.hypernet = (
            Hypernetwork(
                dim_in,
                self.n_sources,
                hidden=dim_emb,
                agg_head=agg,
                mix_head=mix,
                output=settings.output,
                mix_embed=settings.mix == "fnn",
            )
            if agg or mix
            else None
        )
        m = self.n_sources
        self.global_w = nn.Parameter(torch.full((m,), 1.0 / m)) if settings.weights == "global" else None
        self.global_r = nn.Parameter(torch.zeros(m)) if settings.mix == "global" else None
        self.pred_head = nn.Linear(dim_emb, time_bins)

    def mixing(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Aggregation weights ``w`` and target coefficients ``lambda``, both ``[B, m]``."""
        batch, m = bag_count(x, mask), self.n_sources
        w_net, r_net = self.hypernet(x, mask) if self.hypernet is not None else (None, None)
        heads = (w_net, r_net, self.global_w, self.global_r)
        return mix_coefficients(self.settings, heads, lambda t: t.expand(batch, m), x, (batch, m))

    def select(self, w: Tensor) -> Tensor:
        """Boolean ``[B, m]``: the top-k weights of each bag (every source when not sparse)."""
        return select_top(w, self.settings)

    @staticmethod
    def coefficients(w: Tensor, lam: Tensor, selected: Tensor) -> Tensor:
        """``[B, 1+m]``: ``a = sum_{i in S} w_i lambda_i`` for tau_t, then ``[i in S] w_i (1 - lambda_i)``
        (``selected``: :meth:`select`'s mask, boolean or already in ``w``'s dtype)."""
        ws = w * as_dtype(selected, w.dtype)
        return torch.cat([(ws * lam).sum(dim=1, keepdim=True), ws * (1.0 - lam)], dim=1)

    def regulariser(self, w: Tensor, lam: Tensor, selected: Tensor) -> Tensor:
        """gamma * (z-loss [+ mean selected w when sparse]) + beta * mean selected lambda^2,
        averaged over bags (the reference's ``calc_merge_weight_loss`` / ``calc_mix_weight_loss``:
        without top-k the aggregation loss is the z-loss alone), with its gradient in closed form
        (:func:`regulariser_terms`)."""
        weights = regulariser_weights(self.settings)
        sel = as_dtype(selected, torch.float32)
        return closed_form(
            lambda gradient: regulariser_terms(w, lam, sel, weights, gradient=gradient), w, lam
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        w, lam = self.mixing(x, mask)
        selected = self.select(w.detach())
        w_merge = w.clamp(min=0.0, max=1.0) if self.settings.clamp_weights else w
        sel = selected.to(w.dtype)  # once for both
        params = self.stack.merge(self.coefficients(w_merge, lam, sel))
        z = encode(params, x, mask, dropout=self.dropout, training=self.training)
        extras = {"w": w.detach(), "lambda": lam.detach(), "selected": selected}
        return ModelOutput(self.pred_head(z), self.regulariser(w, lam, sel), extras)


class StackedSteph(StackedModel):
    """Several :class:`StephModel` (a target's folds) as one model whose tensors hold the units
    along their first dimension, for :func:`~steph.training.stacked.fit_stacked`: STEPH and
    every ablation but the ``fnn`` mix head. Unit u's bags go through its own hypernetwork
    (:class:`~steph.merging.hypernet.StackedHypernetwork`) or global vectors, their per-bag
    merged encoders ``theta_u + c_b @ [tau_t | tau_s]_u`` (one batched product over the units,
    then the grouped product over the bags that one fold runs) and its own head; each unit's
    regulariser is the mean over its own bags (each unit's in ``extras["unit_aux"]``).
    :meth:`unstack` copies the trained tensors back. Packed bags only."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__(models, StephModel)
        models = cast("list[StephModel]", list(models))
        first = models[0]
        if any(m.settings != first.settings or m.dropout != first.dropout for m in models):
            raise ValueError("models with different settings do not stack")
        self.settings, self.dropout, self.n_sources = first.settings, first.dropout, first.n_sources
        self.stack = StackedVectors([m.stack for m in models])
        nets = [m.hypernet for m in models]
        self.hypernet = (
            StackedHypernetwork([n for n in nets if n is not None]) if first.hypernet is not None else None
        )
        self.global_w = _stacked([m.global_w for m in models])
        self.global_r = _stacked([m.global_r for m in models])

    def mixing(self, x: Tensor, seg: Segments) -> tuple[Tensor, Tensor]:
        """``w`` and ``lambda`` ``[B, m]`` of each unit's bags, as :meth:`StephModel.mixing`."""
        bags, m = seg.count, self.n_sources
        n = bags // self.units
        w_net, r_net = self.hypernet(x, seg) if self.hypernet is not None else (None, None)
        heads = (w_net, r_net, self.global_w, self.global_r)

        def per_bag(t: Tensor) -> Tensor:  # each unit's vector [U, m] to its bags' rows
            return t.unsqueeze(1).expand(self.units, n, m).reshape(bags, m)

        return mix_coefficients(self.settings, heads, per_bag, x, (bags, m))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        seg = packed_segments()
        if mask is not None or seg is None:
            raise ValueError("stacked units take packed bags (packed_bags and weight_groups)")
        units, bags = self.units, seg.count
        n = bags // units
        w, lam = self.mixing(x, seg)
        selected = select_top(w.detach(), self.settings)
        w_merge = w.clamp(min=0.0, max=1.0) if self.settings.clamp_weights else w
        sel = selected.to(w.dtype)
        c = StephModel.coefficients(w_merge, lam, sel)
        params = self.stack.merge(c)
        with weight_groups(seg):  # the merged encoders are per bag
            z = encode(params, x, None, dropout=self.dropout, training=self.training)
        logits = self.head(z)
        rows: list[Tensor] = []
        weights = regulariser_weights(self.settings, scale=units)  # each unit's mean over its bags
        aux = closed_form(
            lambda gradient: regulariser_terms(
                w, lam, sel.float(), weights, gradient=gradient, rows_out=rows
            ),
            w,
            lam,
        )
        extras = {
            "unit_aux": rows[0].view(units, n).sum(dim=1),
            "w": w.detach(),
            "lambda": lam.detach(),
            "selected": selected,
        }
        return ModelOutput(logits, aux, extras)

    @torch.no_grad()
    def unstack(self, models: Sequence[nn.Module]) -> None:
        """Copy each unit's trained hypernetwork, global vectors and head into its model."""
        super().unstack(models)
        units = cast("list[StephModel]", list(models))
        if self.hypernet is not None:
            self.hypernet.unstack([cast(Hypernetwork, m.hypernet) for m in units])
        for u, m in enumerate(units):
            for mine, theirs in ((self.global_w, m.global_w), (self.global_r, m.global_r)):
                if mine is not None and theirs is not None:
                    theirs.copy_(mine[u])


def _stacked(params: Sequence[nn.Parameter | None]) -> nn.Parameter | None:
    """One parameter stacking the units' ``params``, or None where they have none."""
    if any(p is None for p in params):
        return None
    return nn.Parameter(torch.stack([cast(nn.Parameter, p).detach() for p in params]))


class Steph(StephSpec, MergeMethod):
    """STEPH, with the paper's ablations as options."""

    stacked_model: ClassVar[type[StackedModel] | None] = StackedSteph

    def build(self, ctx: MergeContext) -> StephModel:
        return StephModel(
            ctx.theta0,
            ctx.target_vector,
            ctx.source_vectors,
            dim_in=ctx.dim_in,
            dim_emb=ctx.model_config.dim_emb,
            time_bins=ctx.model_config.time_bins,
            dropout=ctx.model_config.dropout,
            settings=self.settings(ctx.config),
        )

    def tables(
        self, model: nn.Module, ids: Sequence[str], extras: Mapping[str, Tensor], ctx: MergeContext
    ) -> dict[str, Table]:
        """``coefficients.csv``: one row per test patient and source (w, lambda, selected 0/1)."""
        rows: list[list[Any]] = []
        w, lam, sel = extras["w"], extras["lambda"], extras["selected"]
        target_too = self.settings(ctx.config).target_as_source
        names = [ctx.target, *ctx.source_names] if target_too else list(ctx.source_names)
        for b, pid in enumerate(ids):
            for i, source in enumerate(names):
                rows.append([pid, source, float(w[b, i]), float(lam[b, i]), int(sel[b, i] > 0)])
        return {COEFFICIENTS_FILE: (["patient_id", "source", "w", "lambda", "selected"], rows)}
