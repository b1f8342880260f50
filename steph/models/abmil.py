"""Attention-MIL (ABMIL) with gated attention, exactly as the STEPH reference (STEPH_SPEC section 2).

For a bag X in R^{K x D} (K patches):

    H = ReLU(X W1^T + b1)                            feat_proj.0          D -> 512
    a = Dropout(tanh(H Wa^T + ba))                   attention_net.attention_a.0
    g = Dropout(sigmoid(H Wb^T + bb))                attention_net.attention_b.0
    s = (a * g) Wc^T + bc                            attention_net.attention_c   -> one score per patch
    alpha = softmax_K(s);  z = sum_k alpha_k H_k     attention pooling over the projected features
    logits = z Wp^T + bp                             pred_head            512 -> 32
    hazards = sigmoid(logits)

Parameter names match the authors' checkpoints so their ``.pth`` files load. Bags are batched
as padded tensors ``x [B, K, D]`` with a boolean ``mask [B, K]`` (True = real patch); padded
positions get zero attention, so a batch gives exactly the per-bag results.

:func:`encode` is the same network as a pure function of its parameters, and every parameter
may carry a leading batch dimension (``[B, out, in]``): STEPH merges a different encoder per bag
and runs the whole batch with batched matmuls.

Inside :func:`patch_chunking` a bag longer than the chunk size is pooled chunk by chunk with an
online softmax (per chunk the running max ``m_c``, ``l_c = sum_k exp(s_k - m_c)`` and
``u_c = sum_k exp(s_k - m_c) H_k``; then ``z = sum_c e^{m_c - M} u_c / sum_c e^{m_c - M} l_c``
with ``M = max_c m_c``), each chunk under activation checkpointing: memory is bounded by the
chunk, not by the bag, and ``z`` and its gradients are those of the one-pass softmax.

Inside :func:`packed_bags` an input ``x [1, N, D]`` holds several bags laid end to end (no
padding, no mask): the projections run once over the N patches of all of them, and the softmax
and pooling run per bag (``z_b = softmax(s_b)^T H_b`` over the bag's own rows). Only shared
(not per-bag) parameters can be packed; models that can declare ``packs_bags = True``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

ENCODER_KEYS: tuple[str, ...] = (
    "feat_proj.0.weight",
    "feat_proj.0.bias",
    "attention_net.attention_a.0.weight",
    "attention_net.attention_a.0.bias",
    "attention_net.attention_b.0.weight",
    "attention_net.attention_b.0.bias",
    "attention_net.attention_c.weight",
    "attention_net.attention_c.bias",
)
"""The 8 ``mil_encoder`` tensors that task vectors merge (STEPH_SPEC section 2)."""

_ATTENTION_SINK: ContextVar[list[Tensor] | None] = ContextVar("abmil_attention_sink", default=None)
_PATCH_CHUNK: ContextVar[int] = ContextVar("abmil_patch_chunk", default=0)
_SEGMENTS: ContextVar[tuple[int, ...] | None] = ContextVar("abmil_segments", default=None)

HEAD_KEYS: tuple[str, ...] = ("pred_head.weight", "pred_head.bias")


class GatedAttention(nn.Module):
    def __init__(self, dim_emb: int, dim_attn: int, dropout: float) -> None:
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(dim_emb, dim_attn), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(dim_emb, dim_attn), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(dim_attn, 1)


class ABMIL(nn.Module):
    """Gated-attention MIL survival network; ``forward`` returns logits ``[B, time_bins]``."""

    packs_bags = True
    """``forward`` accepts packed bags (:func:`packed_bags`): its encoder is shared by all bags."""

    def __init__(
        self,
        dim_in: int,
        *,
        dim_emb: int = 512,
        dim_attn: int = 384,
        dropout: float = 0.25,
        time_bins: int = 32,
    ) -> None:
        super().__init__()
        self.dim_in, self.dim_emb, self.dim_attn, self.time_bins = dim_in, dim_emb, dim_attn, time_bins
        self.dropout = dropout
        self.feat_proj = nn.Sequential(nn.Linear(dim_in, dim_emb), nn.ReLU())
        self.attention_net = GatedAttention(dim_emb, dim_attn, dropout)
        self.pred_head = nn.Linear(dim_emb, time_bins)

    def encoder_params(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.named_parameters() if k in ENCODER_KEYS}

    def embed(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attention-pooled bag embedding ``z`` of shape ``[B, dim_emb]``."""
        return encode(self.encoder_params(), x, mask, dropout=self.dropout, training=self.training)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.pred_head(self.embed(x, mask))

    def architecture(self) -> dict[str, int | float]:
        return {
            "dim_in": self.dim_in,
            "dim_emb": self.dim_emb,
            "dim_attn": self.dim_attn,
            "time_bins": self.time_bins,
            "dropout": self.dropout,
        }


def _linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x [B, K, in]`` times a shared ``[out, in]`` or per-bag ``[B, out, in]`` weight."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def encode(
    params: Mapping[str, Tensor],
    x: Tensor,
    mask: Tensor | None = None,
    *,
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    """ABMIL encoder as a function of ``params`` (the 8 :data:`ENCODER_KEYS`), returning ``z [B, E]``.

    Args:
        params: encoder tensors, each either shared (``[out, in]``/``[out]``) or per bag
            (``[B, out, in]``/``[B, out]``).
        x: padded bags ``[B, K, D]``.
        mask: ``[B, K]`` booleans, True for real patches (None = all real).
    """
    segments = _SEGMENTS.get()
    if segments is not None and x.shape[0] == 1 and mask is None:
        return _encode_packed(params, x, segments, dropout=dropout, training=training)
    chunk = _PATCH_CHUNK.get()
    if 0 < chunk < x.shape[1]:
        return _encode_chunked(params, x, mask, chunk, dropout=dropout, training=training)
    h, s = _scores(params, x, mask, dropout, training)
    alpha = torch.softmax(s, dim=1)
    sink = _ATTENTION_SINK.get()
    if sink is not None:
        sink.append(alpha.detach())
    return torch.bmm(alpha.unsqueeze(1), h).squeeze(1)


def _scores(
    params: Mapping[str, Tensor], x: Tensor, mask: Tensor | None, dropout: float, training: bool
) -> tuple[Tensor, Tensor]:
    """Projected patches ``H [B, K, E]`` and attention scores ``s [B, K]`` (-inf where padded)."""
    h = torch.relu(_linear(x, params["feat_proj.0.weight"], params["feat_proj.0.bias"]))
    a = torch.tanh(
        _linear(h, params["attention_net.attention_a.0.weight"], params["attention_net.attention_a.0.bias"])
    )
    g = torch.sigmoid(
        _linear(h, params["attention_net.attention_b.0.weight"], params["attention_net.attention_b.0.bias"])
    )
    if dropout > 0 and training:
        a = F.dropout(a, dropout, True)
        g = F.dropout(g, dropout, True)
    s = _linear(
        a * g, params["attention_net.attention_c.weight"], params["attention_net.attention_c.bias"]
    ).squeeze(-1)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return h, s


def _chunk_stats(
    x: Tensor, mask: Tensor | None, dropout: float, training: bool, *values: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(m, l, u, s)`` of one patch chunk: max score, sum of ``exp(s - m)``, the same weights times H."""
    h, s = _scores(dict(zip(ENCODER_KEYS, values, strict=True)), x, mask, dropout, training)
    m = s.detach().amax(dim=1)
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - shift.unsqueeze(1))
    u = torch.bmm(p.unsqueeze(1).to(h.dtype), h).squeeze(1)
    return m, p.sum(dim=1), u, s.detach()


def _encode_chunked(
    params: Mapping[str, Tensor],
    x: Tensor,
    mask: Tensor | None,
    chunk: int,
    *,
    dropout: float,
    training: bool,
) -> Tensor:
    """:func:`encode` over patch chunks of at most ``chunk`` (online softmax, see the module doc)."""
    values = tuple(params[k] for k in ENCODER_KEYS)
    grad = torch.is_grad_enabled() and (x.requires_grad or any(v.requires_grad for v in values))
    stats = []
    for start in range(0, x.shape[1], chunk):
        xc = x[:, start : start + chunk]
        mc = mask[:, start : start + chunk] if mask is not None else None
        if grad:
            out = checkpoint(_chunk_stats, xc, mc, dropout, training, *values, use_reentrant=False)
        else:
            out = _chunk_stats(xc, mc, dropout, training, *values)
        stats.append(out)
    m = torch.stack([st[0] for st in stats])  # [C, B]
    top = m.amax(dim=0)
    weight = torch.exp(m - top)  # chunks with no real patch: exp(-inf) = 0
    norm = (weight * torch.stack([st[1] for st in stats])).sum(dim=0)  # [B]
    z = (weight.unsqueeze(-1) * torch.stack([st[2] for st in stats])).sum(dim=0) / norm.unsqueeze(-1)
    sink = _ATTENTION_SINK.get()
    if sink is not None:
        s = torch.cat([st[3] for st in stats], dim=1)
        sink.append(torch.exp(s - (top + norm.detach().log()).unsqueeze(1)))
    return z


def _encode_packed(
    params: Mapping[str, Tensor], x: Tensor, sizes: tuple[int, ...], *, dropout: float, training: bool
) -> Tensor:
    """:func:`encode` of the bags of ``sizes`` laid end to end in ``x [1, N, D]``: ``z [B, E]``."""
    if sum(sizes) != x.shape[1]:
        raise ValueError(f"packed bags of {sum(sizes)} patches, input of {x.shape[1]}")
    if any(params[k].dim() != 2 for k in ENCODER_KEYS if k.endswith(".weight")):
        raise ValueError("per-bag encoder weights cannot be packed (one weight set per bag)")
    h, s = _scores(params, x, None, dropout, training)
    sink = _ATTENTION_SINK.get()
    pooled = []
    for hb, sb in zip(h[0].split(sizes), s[0].split(sizes), strict=True):
        alpha = torch.softmax(sb, dim=0)
        if sink is not None:
            sink.append(alpha.detach().unsqueeze(0))
        pooled.append(alpha @ hb)
    return torch.stack(pooled)


@contextlib.contextmanager
def packed_bags(sizes: Sequence[int]) -> Iterator[None]:
    """Within the block, :func:`encode` reads an input ``x [1, N, D]`` as the bags of ``sizes``
    (N = sum) laid end to end and returns one embedding per bag (see the module docstring).

    >>> model = ABMIL(4, dim_emb=8, dim_attn=4).eval()
    >>> bags = [torch.randn(3, 4), torch.randn(5, 4)]
    >>> with packed_bags([3, 5]):
    ...     packed = model(torch.cat(bags).unsqueeze(0))
    >>> alone = torch.cat([model(b.unsqueeze(0)) for b in bags])
    >>> packed.shape, bool(torch.allclose(packed, alone, atol=1e-6))
    (torch.Size([2, 32]), True)
    """
    token = _SEGMENTS.set(tuple(int(k) for k in sizes))
    try:
        yield
    finally:
        _SEGMENTS.reset(token)


def patch_chunk_size() -> int:
    """The chunk size of the enclosing :func:`patch_chunking` block (0 = none): other per-patch
    modules (STEPH's hypernetwork embedding) chunk their bags by it too."""
    return _PATCH_CHUNK.get()


@contextlib.contextmanager
def patch_chunking(size: int) -> Iterator[None]:
    """Within the block, :func:`encode` pools bags longer than ``size`` patches chunk by chunk
    (``size <= 0``: never). Results and gradients are unchanged; memory is bounded by ``size``."""
    token = _PATCH_CHUNK.set(int(size))
    try:
        yield
    finally:
        _PATCH_CHUNK.reset(token)


@contextlib.contextmanager
def capture_attention() -> Iterator[list[Tensor]]:
    """Collect the attention weights ``alpha [B, K]`` of every :func:`encode` call in the block.

    Works for any model built on :func:`encode` (ABMIL, STEPH's per-bag merged encoder, the
    baselines), without changing their ``forward``; one entry per call, in call order
    (ROUPKT, for instance, encodes once per frozen expert and once with its own encoder).

    >>> model = ABMIL(4, dim_emb=8, dim_attn=4).eval()
    >>> with capture_attention() as maps:
    ...     _ = model(torch.ones(1, 3, 4))
    >>> [tuple(a.shape) for a in maps]
    [(1, 3)]
    """
    sink: list[Tensor] = []
    token = _ATTENTION_SINK.set(sink)
    try:
        yield sink
    finally:
        _ATTENTION_SINK.reset(token)


def create_abmil(dim_in: int, model_config: object | None = None) -> ABMIL:
    """Build an ABMIL from a :class:`steph.config.ModelConfig` (or defaults)."""
    if model_config is None:
        return ABMIL(dim_in)
    return ABMIL(
        dim_in,
        dim_emb=model_config.dim_emb,  # type: ignore[attr-defined]
        dim_attn=model_config.dim_attn,  # type: ignore[attr-defined]
        dropout=model_config.dropout,  # type: ignore[attr-defined]
        time_bins=model_config.time_bins,  # type: ignore[attr-defined]
    )


def architecture_of(state: Mapping[str, Tensor]) -> dict[str, int]:
    """Architecture read off a state dict (shapes of the ABMIL tensors)."""
    w1 = state["feat_proj.0.weight"]
    wa = state["attention_net.attention_a.0.weight"]
    wp = state["pred_head.weight"]
    return {
        "dim_in": int(w1.shape[1]),
        "dim_emb": int(w1.shape[0]),
        "dim_attn": int(wa.shape[0]),
        "time_bins": int(wp.shape[0]),
    }
