"""STEPH's hypernetwork: one shared mean-pooled instance embedding and two small heads.

For a bag X = {x_1..x_K} (docs/merge.md, "STEPH in plain words"):

    h      = (1/K) sum_k ReLU(W_e x_k + b_e)                     shared embedding, D -> 512 (dim_emb)
    w(X)   = ReLU(H_agg(h)),  H_agg = Linear(512, 512) - ReLU - Dropout(0.25) - Linear(512, m)
    r(X)   = ReLU(H_mix(h)),  H_mix: same shape, separate weights
    lambda = 1 / (1 + r)      in (0, 1]: the coefficient of the target task vector

w are the (unnormalised, >= 0) aggregation weights of the m sources; lambda_i mixes the target's
task vector with source i's. Every layer has PyTorch's default initialisation. With both heads
(STEPH's default) they run as two batched products over their stacked weights
(:class:`HeadPair`), saved and loaded under the two heads' own names.

Variants of the reference (``MixVecMergedModel`` / ``DynamicMergedModel``): the output layer of
w is ``relu`` (default), ``sigmoid`` (w in (0, 1)) or ``softplus`` (w > 0, smooth), the
reference's ``output_layer``; ``mix_embed`` gives H_mix its own patch embedding,
``r = ReLU(H_mix((1/K) sum_k ReLU(W'_e x_k + b'_e)))``, the reference's ``fnn`` mix head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..models.abmil import Segments, grouped_linear, packed_segments, patch_chunk_size, segment_mean
from ..models.dropout import Dropout, dropout, unit_rows
from .method_settings import OutputLayer

OUTPUT_LAYERS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus}


def _head(hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), Dropout(dropout), nn.Linear(hidden, n_out))


HEADS = ("agg", "mix")
"""The heads of a :class:`HeadPair`, in the order of its stacked tensors."""
_STACKED = {  # stacked tensor -> (layer of each head's Sequential, part)
    "weight1": ("0", "weight"),
    "bias1": ("0", "bias"),
    "weight2": ("3", "weight"),
    "bias2": ("3", "bias"),
}


class HeadPair(nn.Module):
    """H_agg and H_mix, each ``Linear(h, h) - ReLU - Dropout - Linear(h, m)``, as two batched
    products over stacked weights (``weight1 [2, h, h]``, ``bias1 [2, 1, h]``, ``weight2 [2, m, h]``,
    ``bias2 [2, 1, m]``; index 0 is H_agg): a training step runs 2 products and one dropout mask
    where the two heads ran 4 and 2, and about 30 operators fewer with the backward.

    Initialised as the two ``Sequential`` heads built one after the other (the same draws). The
    :class:`Hypernetwork` that holds it saves and loads it under those heads' names
    (``agg.0.weight`` ... ``mix.3.bias``), so its files are those of two separate heads.
    """

    def __init__(self, hidden: int, n_out: int, dropout: float) -> None:
        super().__init__()
        heads = [_head(hidden, n_out, dropout) for _ in HEADS]
        for name, (layer, part) in _STACKED.items():
            values = [cast(Tensor, getattr(head[int(layer)], part)).detach() for head in heads]
            stacked = torch.stack(values)
            self.register_parameter(name, nn.Parameter(stacked.unsqueeze(1) if part == "bias" else stacked))
        self.dropout = Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        """``[2, B, m]``: both heads (before their output layers) on ``h [2, B, hidden]``, each
        head on its own input (an ``expand`` of one ``[B, hidden]`` where they share it)."""
        weight1, bias1 = cast(Tensor, self.weight1), cast(Tensor, self.bias1)
        weight2, bias2 = cast(Tensor, self.weight2), cast(Tensor, self.bias2)
        hidden = torch.baddbmm(bias1, h, weight1.transpose(1, 2)).relu()
        return torch.baddbmm(bias2, self.dropout(hidden), weight2.transpose(1, 2))

    def one(self, name: Literal["agg", "mix"], h: Tensor) -> Tensor:
        """Head ``name`` alone on ``h [..., hidden]`` (before its output layer)."""
        i = HEADS.index(name)
        weight1, bias1 = cast(Tensor, self.weight1)[i], cast(Tensor, self.bias1)[i, 0]
        weight2, bias2 = cast(Tensor, self.weight2)[i], cast(Tensor, self.bias2)[i, 0]
        hidden = torch.nn.functional.linear(h, weight1, bias1).relu()
        return torch.nn.functional.linear(self.dropout(hidden), weight2, bias2)


def _pair_key(prefix: str, head: str, stacked: str) -> str:
    layer, part = _STACKED[stacked]
    return f"{prefix}{head}.{layer}.{part}"


def _separate_heads(module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any) -> None:
    """State-dict hook of a :class:`Hypernetwork` with a :class:`HeadPair`: the stacked tensors
    as the two heads' entries, each its own copy, where the pair's entries were."""
    pair = f"{prefix}heads."
    entries = list(state.items())
    state.clear()
    for key, value in entries:
        if not key.startswith(pair):
            state[key] = value
        elif key == pair + "weight1":  # the pair's first entry: every head's, in the heads' order
            stacked = {name: dict(entries)[pair + name] for name in _STACKED}
            for i, head in enumerate(HEADS):
                for name, tensor in stacked.items():
                    part = tensor[i, 0] if _STACKED[name][1] == "bias" else tensor[i]
                    state[_pair_key(prefix, head, name)] = part.clone()


def _stacked_heads(module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any, *_rest: Any) -> None:
    """Load pre-hook: the two heads' entries stacked into the pair's tensors. Where any of them
    is missing they are left as they are, so that loading names the pair's tensors as missing
    and the heads' entries as unexpected."""
    keys = {name: [_pair_key(prefix, head, name) for head in HEADS] for name in _STACKED}
    if any(f"{prefix}heads.{name}" in state for name in _STACKED):
        return
    if all(k in state for names in keys.values() for k in names):
        for name, names in keys.items():
            stacked = torch.stack([state.pop(k) for k in names])
            state[f"{prefix}heads.{name}"] = stacked.unsqueeze(1) if _STACKED[name][1] == "bias" else stacked


class Hypernetwork(nn.Module):
    """Per-bag aggregation weights ``w [B, m]`` and mixup ratios ``r [B, m]`` (both >= 0).

    Args:
        dim_in: feature dimension D of the patches.
        n_sources: m, the number of source task vectors.
        hidden: embedding width; STEPH uses ``model.dim_emb`` (512, hard-coded in the reference).
        dropout: dropout inside each head (0.25 in the reference).
        agg_head: build H_agg (False when w is a global parameter, an ablation).
        mix_head: build H_mix (False when lambda is fixed or global, an ablation).
        output: the output layer of w (relu, sigmoid or softplus).
        mix_embed: give H_mix its own patch embedding (the reference's ``fnn``).
    """

    def __init__(
        self,
        dim_in: int,
        n_sources: int,
        *,
        hidden: int = 512,
        dropout: float = 0.25,
        agg_head: bool = True,
        mix_head: bool = True,
        output: OutputLayer = "relu",
        mix_embed: bool = False,
    ) -> None:
        super().__init__()
        if not (agg_head or mix_head):
            raise ValueError("a hypernetwork needs at least one head")
        self.embed = nn.Linear(dim_in, hidden)
        # both heads: one stacked pair (drawn as the two heads, in the same order); else the one
        self.heads = HeadPair(hidden, n_sources, dropout) if agg_head and mix_head else None
        self.agg = _head(hidden, n_sources, dropout) if agg_head and not mix_head else None
        self.mix = _head(hidden, n_sources, dropout) if mix_head and not agg_head else None
        self.mix_embed = nn.Linear(dim_in, hidden) if mix_head and mix_embed else None
        self.output = OUTPUT_LAYERS[output]()
        if self.heads is not None:  # torch leaves both registrations untyped
            self.register_state_dict_post_hook(_separate_heads)  # type: ignore[no-untyped-call]
            self.register_load_state_dict_pre_hook(_stacked_heads)  # type: ignore[no-untyped-call]

    def head(self, name: Literal["agg", "mix"], h: Tensor) -> Tensor:
        """Head ``name`` (H_agg or H_mix) alone on an embedding ``h [..., hidden]``, before its
        output layer; its dropout as the module is in training or not."""
        if self.heads is not None:
            return self.heads.one(name, h)
        layer = self.agg if name == "agg" else self.mix
        if layer is None:
            raise ValueError(f"this hypernetwork has no {name} head")
        out: Tensor = layer(h)
        return out

    def embed_bags(self, x: Tensor, mask: Tensor | None = None, layer: nn.Linear | None = None) -> Tensor:
        """``h [B, hidden]``: the masked mean over patches of ReLU(W_e x + b_e) (``layer`` = W_e).

        Inside :func:`~steph.models.abmil.patch_chunking`, a bag longer than the chunk is summed
        chunk by chunk under activation checkpointing (memory bounded by the chunk). Inside
        :func:`~steph.models.abmil.packed_bags`, ``x [1, N, D]`` holds the bags end to end and
        each bag's mean is one row of a matrix product (:func:`~steph.models.abmil.segment_mean`)."""
        layer = layer or self.embed
        seg = packed_segments()
        if seg is not None and x.shape[0] == 1 and mask is None:
            return segment_mean(layer(x[0]).relu(), seg)
        chunk = patch_chunk_size()
        if 0 < chunk < x.shape[1]:
            return self._embed_chunked(x, mask, chunk, layer)
        e: Tensor = layer(x).relu()
        if mask is None:
            return e.mean(dim=1)
        m = mask.unsqueeze(-1).to(e.dtype)
        return (e * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)

    @staticmethod
    def _embed_sum(x: Tensor, mask: Tensor | None, layer: nn.Linear) -> Tensor:
        e: Tensor = layer(x).relu()
        return (e if mask is None else e * mask.unsqueeze(-1).to(e.dtype)).sum(dim=1)

    def _embed_chunked(self, x: Tensor, mask: Tensor | None, chunk: int, layer: nn.Linear) -> Tensor:
        grad = torch.is_grad_enabled()
        total = None
        for start in range(0, x.shape[1], chunk):
            xc = x[:, start : start + chunk]
            mc = mask[:, start : start + chunk] if mask is not None else None
            part = (
                checkpoint(self._embed_sum, xc, mc, layer, use_reentrant=False)
                if grad
                else self._embed_sum(xc, mc, layer)
            )
            total = part if total is None else total + part
        assert total is not None
        count = (
            mask.sum(dim=1, keepdim=True).to(total.dtype).clamp(min=1.0) if mask is not None else x.shape[1]
        )
        return total / count

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """``(w, r)`` for padded bags ``x [B, K, D]``; a head that was not built gives None."""
        h = self.embed_bags(x, mask)
        if self.heads is not None:
            h_mix = self.embed_bags(x, mask, self.mix_embed) if self.mix_embed is not None else None
            both = self.heads(h.expand(2, *h.shape) if h_mix is None else torch.stack([h, h_mix]))
            if isinstance(self.output, nn.ReLU):  # w and r through one ReLU
                w, r = both.relu().unbind(0)
                return w, r
            w, r = both.unbind(0)
            return self.output(w), r.relu()
        w = self.output(self.agg(h)) if self.agg is not None else None
        if self.mix is None:
            return w, None
        h_mix = self.embed_bags(x, mask, self.mix_embed) if self.mix_embed is not None else h
        return w, self.mix(h_mix).relu()


class StackedHypernetwork(nn.Module):
    """Several folds' :class:`Hypernetwork` of one structure (both heads on one embedding, or one
    head) as one module whose tensors hold the units along their first dimension, for the
    stacked merge models (:mod:`steph.training.stacked`): each unit's patch embedding is one
    grouped product over the units (:func:`~steph.models.abmil.grouped_linear`), its mean per
    bag one product, its head or heads one batched product, and each unit's dropout mask comes
    from its own stream, of the shape its own hypernetwork draws. Not with ``mix_embed``.

    Raises:
        ValueError: the networks differ in structure or shapes, or have their own mix embedding.
    """

    weight1: Tensor
    bias1: Tensor
    weight2: Tensor
    bias2: Tensor

    def __init__(self, nets: Sequence[Hypernetwork]) -> None:
        super().__init__()
        first = nets[0]

        def shapes(net: Hypernetwork) -> list[tuple[str, tuple[int, ...]]]:
            return [(k, tuple(v.shape)) for k, v in net.named_parameters()]

        for net in nets:
            if net.mix_embed is not None:
                raise ValueError("a hypernetwork with its own mix embedding (fnn) does not stack")
            if shapes(net) != shapes(first) or type(net.output) is not type(first.output):
                raise ValueError("hypernetworks of different structures do not stack")
        self.units = len(nets)
        self.kind: Literal["pair", "agg", "mix"] = (
            "pair" if first.heads is not None else "agg" if first.agg is not None else "mix"
        )
        self.output = first.output
        self.embed_weight = nn.Parameter(torch.stack([n.embed.weight.detach() for n in nets]))
        self.embed_bias = nn.Parameter(torch.stack([n.embed.bias.detach() for n in nets]))
        heads = [_head_tensors(n) for n in nets]
        for name in _STACKED:
            self.register_parameter(name, nn.Parameter(torch.stack([h[name].detach() for h in heads])))
        self.dropout_p = _head_dropout(first)

    def forward(self, x: Tensor, seg: Segments) -> tuple[Tensor | None, Tensor | None]:
        """``(w, r)`` of the packed bags of ``seg`` in ``x [1, N, D]``, the units' bags one unit
        after the other (``[B, m]`` each; None for a head the networks lack)."""
        h = segment_mean(grouped_linear(x[0], self.embed_weight, self.embed_bias).relu(), seg)
        units, bags, width = self.units, h.shape[0], h.shape[1]
        n, k = bags // units, 2 if self.kind == "pair" else 1
        inputs = h.view(units, 1, n, width).expand(units, k, n, width).reshape(units * k, n, width)
        w1, b1 = self.weight1.reshape(units * k, width, width), self.bias1.reshape(units * k, 1, width)
        w2 = self.weight2.reshape(units * k, -1, width)
        b2 = self.bias2.reshape(units * k, 1, w2.shape[1])
        hidden = torch.baddbmm(b1, inputs, w1.transpose(1, 2)).relu()
        with unit_rows((k,) * units):  # each unit's mask of its own hypernetwork's shape
            hidden = dropout(hidden, self.dropout_p, self.training)
        out = torch.baddbmm(b2, hidden, w2.transpose(1, 2)).view(units, k, n, -1).transpose(0, 1)
        heads = out.reshape(k, bags, -1)
        if self.kind == "mix":
            return None, heads[0].relu()
        if self.kind == "agg":
            return self.output(heads[0]), None
        if isinstance(self.output, nn.ReLU):  # w and r through one ReLU, as the pair does
            w, r = heads.relu().unbind(0)
            return w, r
        return self.output(heads[0]), heads[1].relu()

    @torch.no_grad()
    def unstack(self, nets: Sequence[Hypernetwork]) -> None:
        """Copy each unit's trained tensors into its hypernetwork."""
        for u, net in enumerate(nets):
            net.embed.weight.copy_(self.embed_weight[u])
            net.embed.bias.copy_(self.embed_bias[u])
            for name, tensor in _head_tensors(net).items():
                tensor.copy_(getattr(self, name)[u])


def _head_tensors(net: Hypernetwork) -> dict[str, Tensor]:
    """The trained head tensors of ``net`` under the :class:`HeadPair` names: the pair's own, or
    its one head's two linear layers."""
    if net.heads is not None:
        return {name: cast(Tensor, getattr(net.heads, name)) for name in _STACKED}
    head = net.agg if net.agg is not None else net.mix
    assert head is not None
    first, last = cast(nn.Linear, head[0]), cast(nn.Linear, head[3])
    return {"weight1": first.weight, "bias1": first.bias, "weight2": last.weight, "bias2": last.bias}


def _head_dropout(net: Hypernetwork) -> float:
    if net.heads is not None:
        return float(net.heads.dropout.p)
    head = net.agg if net.agg is not None else net.mix
    assert head is not None
    return float(cast(nn.Dropout, head[2]).p)
