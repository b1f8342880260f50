"""ROUPKT: routing-based prognostic knowledge transfer (the CROPKT paper's representation baseline).

docs/merge.md, "Representation transfer and the target's own model". E = m + 1 frozen ABMIL encoders, the target's own same-fold model first
and then each source's, give slide embeddings ``e_1..e_E`` (512-d attention-pooled features,
computed without dropout as the reference's precomputing "test" pass). A trainable router (its
own gated ABMIL on the patches, then Linear(512, E, no bias)) gives probabilities
``p = softmax(g)``; with ``S`` the top-k experts (``top_k``, 5 by default):

    y = pred_head( sum_{i in S} p_i ReLU(W_i e_i + b_i) )     (p not renormalised)

Auxiliary losses (weights ``balance_weight`` and ``z_weight``, 0.01 each): the balance loss
``sum_i onehot(top-1)_i p_i`` and the router z-loss ``(log sum_i exp g_i)^2``, both per bag and
averaged over the batch (the reference forwards one bag at a time, so its batch statistics are
per bag). Inference runs all E encoders plus the router, which is why it costs about
(E + 1) / 1.7 times a STEPH forward (the paper: 330.7 vs 40.1 GFLOPs with E = 13).

The frozen encoders are constants of the bag: in training each patient's ``[E, dim_emb]``
embeddings are computed once, in the first forward that holds the bag, and reused in every later
epoch (:func:`steph.training.memo.memoized`; the reference recomputes them every epoch, with the
same result). Only the router, the experts and the head then run per step. The merge unit's
predictions of its training patients read them too (its memo spans training and predictions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from ..models.abmil import ENCODER_KEYS, GatedAttention, encode, encoder_parameters, packed_segments
from ..task_vectors import add, select
from ..training.loop import ModelOutput
from ..training.memo import memoized
from .base import MergeContext, MergeMethod, StackedModel, Table
from .catalog import RouPKTSpec
from .modules import FrozenState


class MILEncoder(nn.Module):
    """A trainable gated-attention ABMIL encoder (no head), ABMIL parameter names."""

    def __init__(self, dim_in: int, dim_emb: int, dim_attn: int, dropout: float) -> None:
        super().__init__()
        self.feat_proj = nn.Sequential(nn.Linear(dim_in, dim_emb), nn.ReLU())
        self.attention_net = GatedAttention(dim_emb, dim_attn, dropout)
        self.dropout = dropout

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return encode(encoder_parameters(self), x, mask, dropout=self.dropout, training=self.training)


class ExpertMLPs(nn.Module):
    """The E expert MLPs ``relu(e_i W_i^T + b_i)``, ``W_i [d, d]``, held as one stacked
    ``weight [E, d, d]`` and ``bias [E, d]``: a training step runs them as one batched product
    and its backward and update see two parameters, however many experts there are (E ``Linear``
    layers cost about 5 operators each a step: their stacking, its backward's unbinding, each
    gradient's accumulation).

    Initialised as E ``nn.Linear(d, d)`` built one after the other (the draws of a ``ModuleList``
    of E layers, as the reference builds them), and saved and loaded under those layers' names,
    ``<i>.0.weight`` and ``<i>.0.bias`` (``Sequential(Linear, ReLU)`` each), so the model's
    files are those of E separate layers.
    """

    def __init__(self, n: int, dim: int) -> None:
        super().__init__()
        layers = [nn.Linear(dim, dim) for _ in range(n)]
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))
        # torch leaves both registrations untyped
        self.register_state_dict_post_hook(_expert_layers)  # type: ignore[no-untyped-call]
        self.register_load_state_dict_pre_hook(_stacked_experts)  # type: ignore[no-untyped-call]

    @property
    def n(self) -> int:
        return int(self.weight.shape[0])

    def forward(self, emb: Tensor) -> Tensor:
        """``[B, E, d]``: expert i on ``emb[:, i]``, every expert in one batched product."""
        out = torch.baddbmm(self.bias.unsqueeze(1), emb.transpose(0, 1), self.weight.transpose(1, 2)).relu()
        return out.transpose(0, 1)


_PARTS = ("weight", "bias")


def _layer_key(prefix: str, i: int, part: str) -> str:
    return f"{prefix}{i}.0.{part}"


def _expert_layers(module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any) -> None:
    """State-dict hook: the stacked tensors as E layers' entries, each its own copy (a file
    format such as safetensors refuses tensors that share memory)."""
    stacked = {part: state.pop(prefix + part) for part in _PARTS}
    for i in range(cast(ExpertMLPs, module).n):
        for part in _PARTS:
            state[_layer_key(prefix, i, part)] = stacked[part][i].clone()


def _stacked_experts(module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any, *_rest: Any) -> None:
    """Load pre-hook: E layers' entries stacked into the module's tensors. Where any layer's
    entry is missing they are left as they are, so that loading names the stacked tensor as
    missing and the layers' entries as unexpected."""
    n = cast(ExpertMLPs, module).n
    for part in _PARTS:
        keys = [_layer_key(prefix, i, part) for i in range(n)]
        if prefix + part not in state and all(k in state for k in keys):
            state[prefix + part] = torch.stack([state.pop(k) for k in keys])


class RouPKTModel(nn.Module):
    """Frozen expert encoders, a MIL router over them, per-expert MLPs and a new head. It accepts
    packed bags (:func:`~steph.models.abmil.packed_bags`): every encoder is shared by all bags."""

    packs_bags = True

    def __init__(
        self,
        expert_encoders: Sequence[Mapping[str, Tensor]],
        *,
        dim_in: int,
        dim_emb: int,
        dim_attn: int,
        time_bins: int,
        dropout: float,
        top_k: int,
        balance_weight: float,
        z_weight: float,
    ) -> None:
        super().__init__()
        n = len(expert_encoders)
        self.frozen = nn.ModuleList(FrozenState(select(e, ENCODER_KEYS)) for e in expert_encoders)
        self.router = MILEncoder(dim_in, dim_emb, dim_attn, dropout)
        self.gate = nn.Linear(dim_emb, n, bias=False)
        self.experts = ExpertMLPs(n, dim_emb)
        self.pred_head = nn.Linear(dim_emb, time_bins)
        self.top_k, self.balance_weight, self.z_weight = top_k, balance_weight, z_weight

    @torch.no_grad()
    def embeddings(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``[B, E, dim_emb]``: each frozen encoder's bag embedding (no dropout)."""
        # nn.ModuleList is not generic: its items are typed Module, these are FrozenState
        frozen = cast("list[FrozenState]", list(self.frozen))
        return torch.stack([encode(f.as_dict(), x, mask, training=False) for f in frozen], dim=1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        emb = memoized("roupkt.experts", lambda: self.embeddings(x, mask))
        logits_r = self.gate(self.router(x, mask))
        probs = torch.softmax(logits_r, dim=1)
        top_p, top_i = probs.topk(self.top_k, dim=1)
        outs = self.experts(emb)
        chosen = outs.gather(1, top_i.unsqueeze(-1).expand(-1, -1, outs.shape[-1]))
        logits = self.pred_head((top_p.unsqueeze(-1) * chosen).sum(dim=1))
        balance = top_p[:, 0].mean()
        z_loss = torch.logsumexp(logits_r, dim=1).square().mean()
        aux = self.balance_weight * balance + self.z_weight * z_loss
        return ModelOutput(logits, aux, {"p": probs.detach()})


class StackedRouPKT(StackedModel):
    """Several :class:`RouPKTModel` (a target's folds) as one model whose tensors hold the units
    along their first dimension, for :func:`~steph.training.stacked.fit_stacked`: unit u's bags
    go through its own frozen experts (their embeddings memoized per bag, as in
    :class:`RouPKTModel`), its own router (one grouped product over the units per layer), gate,
    expert MLPs and head (batched products over the units), and its auxiliary losses are means
    over its own bags (each unit's in ``extras["unit_aux"]``, their sum the ``aux_loss``).
    :meth:`unstack` copies the trained tensors back into the units' models. Packed bags only."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__(models, RouPKTModel)
        models = cast("list[RouPKTModel]", list(models))
        first = models[0]
        same = ("top_k", "balance_weight", "z_weight")
        for m in models:
            shapes = [t.shape for t in m.state_dict().values()]
            if (
                [getattr(m, a) for a in same] != [getattr(first, a) for a in same]
                or shapes != [t.shape for t in first.state_dict().values()]
                or m.router.dropout != first.router.dropout
                or len(m.frozen) != len(first.frozen)
            ):
                raise ValueError("models with different settings or shapes do not stack")
        self.experts_n = len(first.frozen)
        self.top_k, self.balance_weight, self.z_weight = first.top_k, first.balance_weight, first.z_weight
        self.dropout = first.router.dropout
        frozen = [[cast(FrozenState, f).as_dict() for f in m.frozen] for m in models]
        for i in range(self.experts_n):
            for j, key in enumerate(ENCODER_KEYS):
                stacked = torch.stack([frozen[u][i][key] for u in range(self.units)])
                self.register_buffer(f"frozen_{i}_{j}", stacked, persistent=False)
        routers = [encoder_parameters(m.router) for m in models]
        self.router = nn.ParameterList(
            nn.Parameter(torch.stack([r[key].detach() for r in routers])) for key in ENCODER_KEYS
        )
        self.gate_weight = nn.Parameter(torch.stack([m.gate.weight.detach() for m in models]))
        self.experts_weight = nn.Parameter(torch.stack([m.experts.weight.detach() for m in models]))
        self.experts_bias = nn.Parameter(torch.stack([m.experts.bias.detach() for m in models]))

    @torch.no_grad()
    def embeddings(self, x: Tensor) -> Tensor:
        """``[B, E, dim_emb]``: each bag's embedding by each of its unit's frozen experts."""
        buffers = dict(self.named_buffers())
        return torch.stack(
            [
                encode(
                    {key: buffers[f"frozen_{i}_{j}"] for j, key in enumerate(ENCODER_KEYS)},
                    x,
                    None,
                    training=False,
                )
                for i in range(self.experts_n)
            ],
            dim=1,
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        if mask is not None or packed_segments() is None:
            raise ValueError("stacked units take packed bags (packed_bags and weight_groups)")
        units = self.units
        emb = memoized("roupkt.experts", lambda: self.embeddings(x))
        router = dict(zip(ENCODER_KEYS, self.router, strict=True))
        z = encode(router, x, None, dropout=self.dropout, training=self.training)
        n = z.shape[0] // units
        logits_r = torch.bmm(z.view(units, n, -1), self.gate_weight.transpose(1, 2)).view(z.shape[0], -1)
        probs = torch.softmax(logits_r, dim=1)
        top_p, top_i = probs.topk(self.top_k, dim=1)
        e, d = emb.shape[1], emb.shape[2]
        per_expert = emb.view(units, n, e, d).transpose(1, 2).reshape(units * e, n, d)
        outs = torch.baddbmm(
            self.experts_bias.view(units * e, 1, d),
            per_expert,
            self.experts_weight.view(units * e, d, d).transpose(1, 2),
        ).relu()
        outs = outs.view(units, e, n, d).transpose(1, 2).reshape(units * n, e, d)
        chosen = outs.gather(1, top_i.unsqueeze(-1).expand(-1, -1, d))
        pooled = (top_p.unsqueeze(-1) * chosen).sum(dim=1)
        logits = self.head(pooled)
        balance = top_p[:, 0].view(units, n).mean(dim=1)
        z_loss = torch.logsumexp(logits_r, dim=1).square().view(units, n).mean(dim=1)
        unit_aux = self.balance_weight * balance + self.z_weight * z_loss
        return ModelOutput(logits, unit_aux.sum(), {"unit_aux": unit_aux.detach(), "p": probs.detach()})

    @torch.no_grad()
    def unstack(self, models: Sequence[nn.Module]) -> None:
        """Copy each unit's trained router, gate, expert MLPs and head into its model."""
        super().unstack(models)
        for u, m in enumerate(cast("list[RouPKTModel]", list(models))):
            for key, stacked in zip(ENCODER_KEYS, self.router, strict=True):
                encoder_parameters(m.router)[key].copy_(stacked[u])
            m.gate.weight.copy_(self.gate_weight[u])
            m.experts.weight.copy_(self.experts_weight[u])
            m.experts.bias.copy_(self.experts_bias[u])


class RouPKT(RouPKTSpec, MergeMethod):
    """The model of :class:`~steph.merging.catalog.RouPKTSpec`."""

    stacked_model: ClassVar[type[StackedModel] | None] = StackedRouPKT

    def expert_names(self, ctx: MergeContext) -> list[str]:
        return [ctx.target, *ctx.source_names]

    def build(self, ctx: MergeContext) -> RouPKTModel:
        opts = self.options(ctx.config)
        base = select(ctx.theta0, ENCODER_KEYS)
        encoders = [add(base, select(v, ENCODER_KEYS)) for v in (ctx.target_vector, *ctx.source_vectors)]
        mc = ctx.model_config
        return RouPKTModel(
            encoders,
            dim_in=ctx.dim_in,
            dim_emb=mc.dim_emb,
            dim_attn=mc.dim_attn,
            time_bins=mc.time_bins,
            dropout=mc.dropout,
            top_k=opts["top_k"],
            balance_weight=opts["balance_weight"],
            z_weight=opts["z_weight"],
        )

    def tables(
        self, model: nn.Module, ids: Sequence[str], extras: Mapping[str, Tensor], ctx: MergeContext
    ) -> dict[str, Table]:
        """``routing.csv``: router probability of each expert per test patient, and the top-k."""
        probs = extras["p"]
        chosen = torch.zeros_like(probs, dtype=torch.bool).scatter_(
            1, probs.topk(self.settings(ctx.config).top_k, dim=1).indices, True
        )
        rows: list[list[Any]] = []
        for b, pid in enumerate(ids):
            for i, expert in enumerate(self.expert_names(ctx)):
                rows.append([pid, expert, float(probs[b, i]), int(chosen[b, i])])
        return {"routing.csv": (["patient_id", "expert", "p", "selected"], rows)}
