"""AdaMerging-style methods: learned coefficients over task vectors, trained with a new head.

With N task vectors ``tau_1..tau_N`` (the target's same-fold vector first, then the sources)
and the base ``theta0`` (or ``theta_t = theta0 + tau_t`` with ``base: target``):

    theta_enc = base + sum_j c_j tau_j,      c_j initialised to 1/N (or ``coefficients``)

(``clamp_weights``: the vectors are merged with ``min(max(c_j, 0), 1)`` and the regulariser
sees ``c_j``, the reference's ``task_ari_clamp_weights``; ``coefficients``: the reference's
``task_ari_src_init_coef`` in its ``ADA`` mode.)

The coefficients and a new ``pred_head`` are trained jointly on the target's training split with
SurvMLE plus the reference's regulariser on the coefficients (``calc_merge_weight_loss``),

    gamma * [ (log sum_j exp c_j)^2 + (1/k) sum_{j in top-k(c)} c_j ]

where the second term is there only when ``k`` is set (``--option top_k_loss=k``, the
reference's ``task_ari_topk_task_vectors``; off by default, the coefficients are never
truncated to the top k, as in the reference's ``MergedModel``).
This is the reference's ``MergedModel`` in its ``ADA`` mode (docs/merge.md, "Methods"): supervised by
the survival loss, not by AdaMerging's entropy on unlabeled data (Yang et al., ICLR 2024).

``hypernet: true`` is the reference's ``ADA-dynamic`` (``DynamicMergedModel``, the paper's
"+hypernetwork" rows): the coefficients of each bag come from a hypernetwork,
``c(X) = out(H(mean_k ReLU(W_e x_k + b_e)))`` with ``H = Linear-ReLU-Dropout(0.25)-Linear(., N)``
and ``out`` = relu / sigmoid / softplus (``output``), and the regulariser above is averaged over
the bags of a batch.

Variants, each preprocessing the task vectors as the reference's ``preprocess_task_vectors``
(pairing every vector with the target's, the target's own included):

- ``ties-adamerging`` ("TIES AM"): ``tau_j <- TIES_sum(tau_t, tau_j)``; the target's entry is
  ``TIES_sum(tau_t, tau_t) = 2 trim(tau_t)`` (:mod:`steph.merging.ties`);
- ``iso-c-adamerging`` ("Iso-C AM") / ``iso-cts-adamerging``: ``tau_j <- Iso(tau_t, tau_j)``
  (:mod:`steph.merging.iso`; the reference's Iso-CTS write-back bug fixed);
- ``surgery-adamerging`` ("Surgery AM"): :mod:`steph.merging.surgery`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from ..models.abmil import ENCODER_KEYS, bag_count, encode, packed_segments, weight_groups
from ..models.closed_form import closed_form
from ..task_vectors import StateDict
from ..training.loop import ModelOutput
from .base import MergeContext, MergeMethod, StackedModel, Table
from .baselines import all_vectors, base_encoder
from .catalog import AdaMergingSpec, IsoCAdaMergingSpec, IsoCTSAdaMergingSpec, TiesAdaMergingSpec
from .hypernet import Hypernetwork, StackedHypernetwork
from .iso import iso_pairwise
from .method_settings import OutputLayer
from .modules import StackedVectors, VectorStack
from .once import once_per_vectors
from .ties import pairwise_with_target


def regulariser_terms(
    c: Tensor, top_k: int | None, gamma: float, *, gradient: bool, rows_out: list[Tensor] | None = None
) -> tuple[Tensor, Tensor | None]:
    """The reference's regulariser on the coefficients ``c [..., N]`` (R rows), ``gamma`` times
    the mean over rows of ``LSE_r^2 [+ (1/k) sum_{j in T_r} c_rj]``, and its gradient in ``c``
    (None unless ``gradient``), in float32. With ``LSE_r = log sum_j exp c_rj`` and ``T_r`` the
    indices of row r's k largest:

        L = gamma / R sum_r [ LSE_r^2 + [k set] (1/k) sum_{j in T_r} c_rj ]
        dL/dc_rj = gamma / R [ 2 LSE_r softmax(c_r)_j + [k set] [j in T_r] / k ]
    """
    c32 = c.float()
    rows = c32.numel() // c32.shape[-1]
    scale = gamma / rows
    lse = torch.logsumexp(c32, dim=-1, keepdim=True)
    top = c32.topk(top_k, dim=-1) if top_k is not None else None
    if rows_out is not None:  # each row's term, gamma / R [LSE_r^2 + ...]: the units' own regularisers
        row = lse.square().squeeze(-1)
        if top is not None:
            row = row + top.values.sum(dim=-1) / top.values.shape[-1]
        row = row * scale
        rows_out.append(row.detach())
        loss = row.sum()
    else:
        loss = lse.square().sum()
        if top is not None:
            loss = loss + top.values.sum() / top.values.shape[-1]
        loss = scale * loss
    if not gradient:
        return loss, None
    grad = torch.softmax(c32, dim=-1) * (2.0 * scale * lse)
    if top is not None:
        share = torch.full_like(top.values, scale / top.values.shape[-1])
        grad = grad.scatter_add(-1, top.indices, share)
    return loss, grad


def regularise_coefficients(c: Tensor, top_k: int | None, gamma: float) -> Tensor:
    """The regulariser of :func:`regulariser_terms` (a float32 scalar), with its gradient in
    closed form where ``c`` needs one."""
    return closed_form(lambda gradient: regulariser_terms(c, top_k, gamma, gradient=gradient), c)


class AdaMergingModel(nn.Module):
    """``base + sum_j c_j tau_j`` with trainable ``coefficients [N]`` (or a hypernetwork giving
    ``c [B, N]``) and a new head. It accepts packed bags (:func:`~steph.models.abmil.packed_bags`)."""

    packs_bags = True

    def __init__(
        self,
        base: Mapping[str, Tensor],
        vectors: Sequence[Mapping[str, Tensor]],
        *,
        dim_in: int = 0,
        dim_emb: int,
        time_bins: int,
        dropout: float,
        gamma: float,
        top_k: int | None = None,
        hypernet: bool = False,
        output: OutputLayer = "relu",
        init: Sequence[float] | None = None,
        clamp: bool = False,
    ) -> None:
        super().__init__()
        self.stack = VectorStack(base, vectors)
        n = len(vectors)
        self.clamp = clamp
        if hypernet:
            self.hypernet: Hypernetwork | None = Hypernetwork(
                dim_in, n, hidden=dim_emb, mix_head=False, output=output
            )
            self.coefficients = None
        else:
            self.hypernet = None
            start = (
                torch.full((n,), 1.0 / n) if init is None else torch.tensor(list(init), dtype=torch.float32)
            )
            self.coefficients = nn.Parameter(start)
        self.pred_head = nn.Linear(dim_emb, time_bins)
        self.dropout = dropout
        self.gamma = gamma
        self.top_k = top_k

    def weights(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``c [N]`` (global) or ``[B, N]`` (hypernetwork)."""
        if self.hypernet is None:
            assert self.coefficients is not None
            return self.coefficients
        heads: tuple[Tensor | None, Tensor | None] = self.hypernet(x, mask)
        w = heads[0]
        assert w is not None
        return w

    def represent(self, x: Tensor, mask: Tensor | None, c: Tensor) -> Tensor:
        """The bag embeddings of the merged encoder(s) ``[B, E]``; with ``clamp`` the vectors are
        merged with ``min(max(c, 0), 1)`` (the regulariser still sees ``c``)."""
        if self.clamp:
            c = c.clamp(min=0.0, max=1.0)
        return encode(self.stack.merge(c), x, mask, dropout=self.dropout, training=self.training)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        c = self.weights(x, mask)
        z = self.represent(x, mask, c)
        aux = regularise_coefficients(c, self.top_k, self.gamma)
        extras = {"coefficients": c.detach().expand(bag_count(x, mask), -1)}
        return ModelOutput(self.pred_head(z), aux, extras)


class StackedAdaMerging(StackedModel):
    """Several :class:`AdaMergingModel` (a target's folds) as one model whose parameters hold the
    units along their first dimension, for :func:`~steph.training.stacked.fit_stacked`. For unit
    u, with its own base and vectors,

        theta_u = base_u + sum_j c_uj tau_uj       (one batched product for all units, in fp32)

    with global coefficients ``c_u``, or per bag ``c_b`` from unit u's hypernetwork
    (:class:`~steph.merging.hypernet.StackedHypernetwork`; the bags' merged encoders then per
    bag); each unit's bags go through its own merged encoder (one grouped product over the units
    per layer) and its own head (one batched product), and each unit's regulariser is its own
    (each in ``extras["unit_aux"]``, their sum the ``aux_loss``). :meth:`unstack` copies the
    trained coefficients or hypernetworks and heads back into the units' models. It accepts
    packed bags only."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__(models, AdaMergingModel)
        models = cast("list[AdaMergingModel]", list(models))
        first = models[0]
        same = ("clamp", "dropout", "gamma", "top_k")
        for m in models:
            differs = [a for a in same if getattr(m, a) != getattr(first, a)]
            if differs or (m.hypernet is None) != (first.hypernet is None):
                raise ValueError(f"models with different settings do not stack ({differs})")
        self.stack = StackedVectors([m.stack for m in models])
        self.clamp, self.dropout, self.gamma, self.top_k = (
            first.clamp,
            first.dropout,
            first.gamma,
            first.top_k,
        )
        if first.hypernet is not None:
            self.hypernet: StackedHypernetwork | None = StackedHypernetwork(
                [cast(Hypernetwork, m.hypernet) for m in models]
            )
            self.coefficients = None
        else:
            self.hypernet = None
            self.coefficients = nn.Parameter(
                torch.stack([cast(Tensor, m.coefficients).detach() for m in models])
            )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        seg = packed_segments()
        if mask is not None or seg is None:
            raise ValueError("stacked units take packed bags (packed_bags and weight_groups)")
        units = self.units
        if self.hypernet is not None:  # per bag: [B, N], each unit's bags in turn
            c = self.hypernet(x, seg)[0]
            assert c is not None
        else:  # global: [U, N]
            assert self.coefficients is not None
            c = self.coefficients
        params = self.stack.merge(c.clamp(min=0.0, max=1.0) if self.clamp else c)
        # per-bag coefficients: the merged encoders are per bag; global ones: per unit
        with weight_groups(seg) if self.hypernet is not None else contextlib.nullcontext():
            z = encode(params, x, None, dropout=self.dropout, training=self.training)
        logits = self.head(z)
        rows: list[Tensor] = []
        # gamma per unit: regulariser_terms averages its rows, each unit's regulariser is its own
        gamma = self.gamma * units
        aux = closed_form(
            lambda gradient: regulariser_terms(c, self.top_k, gamma, gradient=gradient, rows_out=rows), c
        )
        return ModelOutput(logits, aux, {"unit_aux": rows[0].view(units, -1).sum(dim=1)})

    @torch.no_grad()
    def unstack(self, models: Sequence[nn.Module]) -> None:
        """Copy each unit's trained coefficients or hypernetwork and head into its model."""
        super().unstack(models)
        units = cast("list[AdaMergingModel]", list(models))
        if self.hypernet is not None:
            self.hypernet.unstack([cast(Hypernetwork, m.hypernet) for m in units])
            return
        assert self.coefficients is not None
        for u, m in enumerate(units):
            assert m.coefficients is not None
            m.coefficients.copy_(self.coefficients[u])


class AdaMerging(AdaMergingSpec, MergeMethod):
    """The model of :class:`~steph.merging.catalog.AdaMergingSpec`."""

    stacked_model: ClassVar[type[StackedModel] | None] = StackedAdaMerging

    def vectors(self, ctx: MergeContext) -> list[StateDict]:
        return all_vectors(ctx)

    def vector_names(self, ctx: MergeContext) -> list[str]:
        return [
            f"{ctx.target}/fold_{ctx.fold}",
            *(f"{s}/fold_{ctx.config.source_fold}" for s in ctx.source_names),
        ]

    def model_kwargs(self, ctx: MergeContext) -> dict[str, Any]:
        s = self.settings(ctx.config)
        return {
            "dim_in": ctx.dim_in,
            "dim_emb": ctx.model_config.dim_emb,
            "time_bins": ctx.model_config.time_bins,
            "dropout": ctx.model_config.dropout,
            "gamma": float(s.gamma),
            "top_k": s.top_k_loss,
            "hypernet": s.hypernet,
            "output": s.output,
            "init": s.coefficients,
            "clamp": s.clamp_weights,
        }

    def build(self, ctx: MergeContext) -> AdaMergingModel:
        base = base_encoder(ctx, self.settings(ctx.config).base)
        return AdaMergingModel(base, self.vectors(ctx), **self.model_kwargs(ctx))

    def tables(
        self, model: nn.Module, ids: Sequence[str], extras: Mapping[str, Tensor], ctx: MergeContext
    ) -> dict[str, Table]:
        """``task_weights.csv``: the learned coefficient of each task vector (per test patient
        with ``hypernet: true``)."""
        assert isinstance(model, AdaMergingModel)
        names = self.vector_names(ctx)
        if model.coefficients is not None:
            rows: list[list[Any]] = [
                [name, float(c)] for name, c in zip(names, model.coefficients.detach().cpu(), strict=True)
            ]
            return {"task_weights.csv": (["task_vector", "weight"], rows)}
        c = extras["coefficients"]
        rows = [[pid, name, float(c[b, j])] for b, pid in enumerate(ids) for j, name in enumerate(names)]
        return {"task_weights.csv": (["patient_id", "task_vector", "weight"], rows)}


class TiesAdaMerging(TiesAdaMergingSpec, AdaMerging):
    """The model of :class:`~steph.merging.catalog.TiesAdaMergingSpec`."""

    def vectors(self, ctx: MergeContext) -> list[StateDict]:
        vectors = all_vectors(ctx)
        density = self.settings(ctx.config).density
        return once_per_vectors(
            ctx.vector_hashes,
            ("ties-pairwise", density),
            lambda: pairwise_with_target(vectors[0], vectors, ENCODER_KEYS, density=density),
        )


class IsoCAdaMerging(IsoCAdaMergingSpec, AdaMerging):
    """The model of :class:`~steph.merging.catalog.IsoCAdaMergingSpec`."""

    def vectors(self, ctx: MergeContext) -> list[StateDict]:
        vectors = all_vectors(ctx)
        return once_per_vectors(
            ctx.vector_hashes, ("iso-c",), lambda: iso_pairwise(vectors[0], vectors, ENCODER_KEYS, "iso-c")
        )


class IsoCTSAdaMerging(IsoCTSAdaMergingSpec, AdaMerging):
    """The model of :class:`~steph.merging.catalog.IsoCTSAdaMergingSpec`."""

    def vectors(self, ctx: MergeContext) -> list[StateDict]:
        vectors = all_vectors(ctx)
        fraction = self.settings(ctx.config).common_fraction
        return once_per_vectors(
            ctx.vector_hashes,
            ("iso-cts", fraction),
            lambda: iso_pairwise(vectors[0], vectors, ENCODER_KEYS, "iso-cts", fraction),
        )
