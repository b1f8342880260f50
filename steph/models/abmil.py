"""Attention-MIL (ABMIL) with gated attention, exactly as the STEPH reference (docs/train-source.md, "Protocol").

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

Inside :func:`packed_bags` an input ``x [1, N, D]`` holds B bags laid end to end (no padding,
no mask), described by :class:`Segments` (``bag(n)``: the bag of patch n). A fixed number of
operators runs whatever B is:

    shared weights      Y = X W^T + b                       one matrix product over the N patches
    per-bag weights     Y_n = x_n W_{bag(n)}^T + b_{bag(n)}  one grouped product (``grouped_mm``)
    softmax, pooling    A = softmax_rows(S),  S[b, n] = s_n if bag(n) = b else -inf
                        z = A H                              (A [B, N]: alpha_b on bag b's columns)

so ``z_b = softmax(s_b)^T H_b`` as for each bag alone. A per-bag weight ``[B, out, in]`` (STEPH's
merged encoder) runs as one grouped matrix product where the kernel exists for the device and
dtype (CPU; CUDA in bf16), else bag by bag over views of the pack. Models whose forward accepts
packs declare ``packs_bags = True``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .dropout import Dropout
from .dropout import dropout as _dropout

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
"""The 8 ``mil_encoder`` tensors that task vectors merge (docs/train-source.md, "Protocol")."""

_ATTENTION_SINK: ContextVar[list[Tensor] | None] = ContextVar("abmil_attention_sink", default=None)
_PATCH_CHUNK: ContextVar[int] = ContextVar("abmil_patch_chunk", default=0)


@dataclass(frozen=True)
class Segments:
    """B bags laid end to end in N rows: ``sizes`` (Python ints), ``index [N]`` (the bag of each
    row, int64), ``ends [B]`` (cumulative sizes, int32, the offsets of ``grouped_mm``), and the
    two below, all on the rows' device. Built once per pack (:func:`segments`), where the pack is
    staged, so that a forward on CUDA copies nothing from the host."""

    sizes: tuple[int, ...]
    index: Tensor
    ends: Tensor
    columns: Tensor
    """``arange(N)`` (int64): each row's column in a ``[B, N]`` matrix over the pack."""
    row_weights: Tensor
    """``1 / |bag(n)|`` per row (float32): the weights of a per-bag mean."""

    @property
    def count(self) -> int:
        return len(self.sizes)


def segments(sizes: Sequence[int], device: torch.device | str = "cpu") -> Segments:
    """:class:`Segments` of bags of ``sizes`` (each >= 1) laid end to end, on ``device``."""
    sizes = tuple(int(k) for k in sizes)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"packed bags need at least one patch each, got sizes {sizes}")
    ends = torch.tensor(list(itertools.accumulate(sizes)), dtype=torch.long)
    columns = torch.arange(sum(sizes))
    index = torch.searchsorted(ends, columns, right=True)
    weights = torch.tensor([1.0 / k for k in sizes]).index_select(0, index)
    return Segments(
        sizes, index.to(device), ends.to(device, torch.int32), columns.to(device), weights.to(device)
    )


_SEGMENTS: ContextVar[Segments | None] = ContextVar("abmil_segments", default=None)
_GROUPS: ContextVar[Segments | None] = ContextVar("abmil_weight_groups", default=None)
log = logging.getLogger(__name__)

HEAD_KEYS: tuple[str, ...] = ("pred_head.weight", "pred_head.bias")


class GatedAttention(nn.Module):
    def __init__(self, dim_emb: int, dim_attn: int, dropout: float) -> None:
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(dim_emb, dim_attn), nn.Tanh(), Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(dim_emb, dim_attn), nn.Sigmoid(), Dropout(dropout))
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
        return encoder_parameters(self)

    def embed(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attention-pooled bag embedding ``z`` of shape ``[B, dim_emb]``."""
        return encode(self.encoder_params(), x, mask, dropout=self.dropout, training=self.training)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        logits: Tensor = self.pred_head(self.embed(x, mask))
        return logits

    def architecture(self) -> dict[str, int | float]:
        return {
            "dim_in": self.dim_in,
            "dim_emb": self.dim_emb,
            "dim_attn": self.dim_attn,
            "time_bins": self.time_bins,
            "dropout": self.dropout,
        }


class ABMILEncoder(Protocol):
    """A module with ABMIL's encoder layers: ``feat_proj`` (Linear, ReLU) and ``attention_net``."""

    feat_proj: nn.Sequential
    attention_net: GatedAttention


def encoder_parameters(module: ABMILEncoder) -> dict[str, Tensor]:
    """The :data:`ENCODER_KEYS` parameters of a module with ABMIL's ``feat_proj`` and
    ``attention_net``, read off its submodules' parameter tables (``named_parameters()`` walks
    every submodule, and took about a fifth of a tiny model's training step; attribute access
    goes through ``nn.Module.__getattr__`` once per name: 11 µs a call against 3 µs here)."""
    layers = module.attention_net._modules
    # nn.Module keeps its children and parameters in these tables (Optional-typed by torch;
    # nn.Sequential's children are not)
    proj = module.feat_proj._modules["0"]._parameters
    a = cast(nn.Module, cast(nn.Module, layers["attention_a"])._modules["0"])._parameters
    b = cast(nn.Module, cast(nn.Module, layers["attention_b"])._modules["0"])._parameters
    c = cast(nn.Module, layers["attention_c"])._parameters
    values = (
        proj["weight"],
        proj["bias"],
        a["weight"],
        a["bias"],
        b["weight"],
        b["bias"],
        c["weight"],
        c["bias"],
    )
    return dict(zip(ENCODER_KEYS, cast(tuple[Tensor, ...], values), strict=True))


def _linear(x: Tensor, weight: Tensor, bias: Tensor, seg: Segments | None = None) -> Tensor:
    """``x [B, K, in]`` times a shared ``[out, in]`` or per-bag ``[B, out, in]`` weight; with
    ``seg``, ``x [N, in]`` holds the bags of ``seg`` end to end (:func:`_segment_linear`)."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    if seg is not None:
        return _segment_linear(x, weight, bias, seg)
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


_GROUPED_FAILED = False
"""Set when ``grouped_mm`` raised once (no kernel for this build or device): per-bag products since."""


def _compute_dtype(x: Tensor) -> torch.dtype:
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def _grouped_kernel(x: Tensor, weight: Tensor, dtype: torch.dtype) -> bool:
    """Whether ``grouped_mm`` runs ``x [N, in]`` times ``weight [B, out, in]`` here: on CPU any
    dtype, on CUDA bf16 (compute capability 8.0 or later); rows 16-byte aligned either way."""
    if not hasattr(F, "grouped_mm"):
        return False
    if x.device.type == "cuda":
        if dtype != torch.bfloat16 or torch.cuda.get_device_capability(x.device) < (8, 0):
            return False
    elif x.device.type != "cpu":
        return False
    step = 128 // (torch.finfo(dtype).bits)
    return weight.shape[1] % step == 0 and weight.shape[2] % step == 0 and not _GROUPED_FAILED


def as_dtype(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in ``dtype``: ``t`` itself where it already is (a ``.to`` that copies nothing still
    costs a dispatch, about 3 µs on CPU)."""
    return t if t.dtype == dtype else t.to(dtype)


def _segment_linear(x: Tensor, weight: Tensor, bias: Tensor, seg: Segments) -> Tensor:
    """``y_n = x_n W_{bag(n)}^T + b_{bag(n)}`` for packed rows ``x [N, in]`` and per-bag weights
    ``W [B, out, in]``: one grouped product (bag by bag where no kernel exists); an output of
    width 1 as a row-wise dot product with each row's gathered weight, accumulated in fp32."""
    f32 = torch.float32
    if weight.shape[1] == 1:
        w = weight[:, 0, :].index_select(0, seg.index)
        dot = (as_dtype(x, f32) * as_dtype(w, f32)).sum(dim=-1, keepdim=True) + as_dtype(
            bias.index_select(0, seg.index), f32
        )
        return as_dtype(dot, _compute_dtype(x))
    global _GROUPED_FAILED
    dtype = _compute_dtype(x)
    y: Tensor | None = None
    if _grouped_kernel(x, weight, dtype):
        try:
            y = F.grouped_mm(as_dtype(x, dtype), as_dtype(weight, dtype).transpose(1, 2), offs=seg.ends)
        except RuntimeError as exc:  # a build or device without the kernel: bag by bag from now on
            _GROUPED_FAILED = True
            log.warning("grouped matrix product unavailable on %s (%s): per-bag products", x.device, exc)
    if y is None:
        y = torch.cat(
            [F.linear(xb, wb) for xb, wb in zip(x.split_with_sizes(seg.sizes), weight, strict=True)]
        )
    return y + as_dtype(bias.index_select(0, seg.index), y.dtype)


def grouped_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``y_n = x_n W_{g(n)}^T + b_{g(n)}`` for the rows ``x [N, in]`` of a pack and weights
    ``[G, out, in]`` / ``[G, out]`` of the G groups of the enclosing :func:`weight_groups` block
    (else of the bags of the enclosing :func:`packed_bags` block): one grouped product."""
    seg = _GROUPS.get() or _SEGMENTS.get()
    if seg is None or seg.count != weight.shape[0] or sum(seg.sizes) != x.shape[0]:
        raise ValueError(
            f"grouped_linear of {x.shape[0]} rows and {weight.shape[0]} weights outside a matching pack"
        )
    return _segment_linear(x, weight, bias, seg)


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
    seg = _SEGMENTS.get()
    if seg is not None and x.shape[0] == 1 and mask is None:
        return _encode_packed(params, x, seg, dropout=dropout, training=training)
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
    params: Mapping[str, Tensor],
    x: Tensor,
    mask: Tensor | None,
    dropout: float,
    training: bool,
    seg: Segments | None = None,
) -> tuple[Tensor, Tensor]:
    """Projected patches ``H [B, K, E]`` and attention scores ``s [B, K]`` (-inf where padded);
    with ``seg``, packed rows ``x [N, D]`` give ``H [N, E]`` and ``s [N]``."""
    h = torch.relu(_linear(x, params["feat_proj.0.weight"], params["feat_proj.0.bias"], seg))
    a = torch.tanh(
        _linear(
            h, params["attention_net.attention_a.0.weight"], params["attention_net.attention_a.0.bias"], seg
        )
    )
    g = torch.sigmoid(
        _linear(
            h, params["attention_net.attention_b.0.weight"], params["attention_net.attention_b.0.bias"], seg
        )
    )
    if dropout > 0 and training:
        a = _dropout(a, dropout)
        g = _dropout(g, dropout)
    s = _linear(
        a * g, params["attention_net.attention_c.weight"], params["attention_net.attention_c.bias"], seg
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


def segment_softmax(s: Tensor, seg: Segments) -> Tensor:
    """``A [B, N]``: row b is ``softmax(s_b)`` on bag b's columns and 0 elsewhere, from the packed
    scores ``s [N]`` (the rows of ``S``, ``-inf`` off the bag, go through one softmax).

    >>> seg = segments([2, 1])
    >>> segment_softmax(torch.tensor([0.0, 0.0, 5.0]), seg)
    tensor([[0.5000, 0.5000, 0.0000],
            [0.0000, 0.0000, 1.0000]])
    """
    dense = s.new_full((seg.count, s.shape[0]), float("-inf")).index_put((seg.index, seg.columns), s)
    return torch.softmax(dense, dim=1)


def segment_mean(e: Tensor, seg: Segments) -> Tensor:
    """``[B, F]``: the mean of each bag's rows of the packed ``e [N, F]`` (one matrix product
    with ``M [B, N]``, ``M[b, n] = 1/|b|`` on bag b's columns)."""
    weights = seg.row_weights.to(e.dtype)
    means = e.new_zeros((seg.count, e.shape[0])).index_put((seg.index, seg.columns), weights)
    return means @ e


def _encode_packed(
    params: Mapping[str, Tensor], x: Tensor, seg: Segments, *, dropout: float, training: bool
) -> Tensor:
    """:func:`encode` of the bags of ``seg`` laid end to end in ``x [1, N, D]``: ``z [B, E]``
    (see the module docstring: the same operators whatever the number of bags)."""
    if sum(seg.sizes) != x.shape[1]:
        raise ValueError(f"packed bags of {sum(seg.sizes)} patches, input of {x.shape[1]}")
    groups = _GROUPS.get() or seg
    if sum(groups.sizes) != x.shape[1]:
        raise ValueError(f"weight groups of {sum(groups.sizes)} rows, input of {x.shape[1]}")
    what = "bag" if groups is seg else "group"
    for key in ENCODER_KEYS:
        value = params[key]
        if value.dim() == (3 if key.endswith(".weight") else 2) and value.shape[0] != groups.count:
            raise ValueError(f"per-{what} {key} for {value.shape[0]} {what}s, {groups.count} packed")
    h, s = _scores(params, x[0], None, dropout, training, groups)
    alpha = segment_softmax(s, seg)
    sink = _ATTENTION_SINK.get()
    if sink is not None:
        starts = [0, *itertools.accumulate(seg.sizes)]
        sink.extend(alpha[b : b + 1, starts[b] : starts[b + 1]].detach() for b in range(seg.count))
    return alpha.to(h.dtype) @ h


def packed_segments() -> Segments | None:
    """The :class:`Segments` of the enclosing :func:`packed_bags` block (None outside one): other
    per-bag modules (STEPH's hypernetwork) read a packed input by them too."""
    return _SEGMENTS.get()


def bag_count(x: Tensor, mask: Tensor | None = None) -> int:
    """How many bags ``x`` holds: B of ``x [B, K, D]``, or the packed bags of ``x [1, N, D]``
    inside :func:`packed_bags`."""
    seg = _SEGMENTS.get()
    if seg is not None and x.shape[0] == 1 and mask is None:
        return seg.count
    return int(x.shape[0])


@contextlib.contextmanager
def packed_bags(layout: Sequence[int] | Segments) -> Iterator[None]:
    """Within the block, :func:`encode` reads an input ``x [1, N, D]`` as the bags of ``layout``
    (their sizes, N = sum, or their :class:`Segments`) laid end to end and returns one embedding
    per bag (see the module docstring).

    >>> model = ABMIL(4, dim_emb=8, dim_attn=4).eval()
    >>> bags = [torch.randn(3, 4), torch.randn(5, 4)]
    >>> with packed_bags([3, 5]):
    ...     packed = model(torch.cat(bags).unsqueeze(0))
    >>> alone = torch.cat([model(b.unsqueeze(0)) for b in bags])
    >>> packed.shape, bool(torch.allclose(packed, alone, atol=1e-6))
    (torch.Size([2, 32]), True)
    """
    seg = layout if isinstance(layout, Segments) else segments(layout)
    token = _SEGMENTS.set(seg)
    try:
        yield
    finally:
        _SEGMENTS.reset(token)


@contextlib.contextmanager
def weight_groups(rows: Sequence[int] | Segments) -> Iterator[None]:
    """Within the block, the per-bag encoder tensors of a packed :func:`encode` (``[G, out, in]``
    / ``[G, out]``) belong to G groups of consecutive rows of the pack (``rows``: each group's
    patches, or their :class:`Segments`), not to its bags: the weights of several training
    units, each over its own bags (:mod:`steph.training.stacked`). Each product is then one
    grouped product over G groups; the softmax and pooling still run per bag.

    >>> enc = {k: v for k, v in ABMIL(4, dim_emb=8, dim_attn=4).encoder_params().items()}
    >>> two = {k: torch.stack([v, 2 * v]) for k, v in enc.items()}   # two units' encoders
    >>> bags = [torch.randn(3, 4), torch.randn(2, 4), torch.randn(5, 4)]
    >>> with packed_bags([3, 2, 5]), weight_groups([5, 5]):   # bags 0-1: unit 0, bag 2: unit 1
    ...     z = encode(two, torch.cat(bags).unsqueeze(0))
    >>> unit1 = {k: v[1] for k, v in two.items()}
    >>> bool(torch.allclose(z[2], encode(unit1, bags[2].unsqueeze(0))[0], atol=1e-6))
    True
    """
    seg = rows if isinstance(rows, Segments) else segments(rows)
    token = _GROUPS.set(seg)
    try:
        yield
    finally:
        _GROUPS.reset(token)


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


class Architecture(Protocol):
    """The widths :func:`create_abmil` reads (:class:`steph.config.ModelConfig` has them)."""

    @property
    def dim_emb(self) -> int: ...
    @property
    def dim_attn(self) -> int: ...
    @property
    def dropout(self) -> float: ...
    @property
    def time_bins(self) -> int: ...


def create_abmil(dim_in: int, model_config: Architecture | None = None) -> ABMIL:
    """Build an ABMIL from a :class:`steph.config.ModelConfig` (or defaults)."""
    if model_config is None:
        return ABMIL(dim_in)
    return ABMIL(
        dim_in,
        dim_emb=model_config.dim_emb,
        dim_attn=model_config.dim_attn,
        dropout=model_config.dropout,
        time_bins=model_config.time_bins,
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
