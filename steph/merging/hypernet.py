"""STEPH's hypernetwork: one shared mean-pooled instance embedding and two small heads.

For a bag X = {x_1..x_K} (docs/merge.md, "STEPH in plain words"):

    h      = (1/K) sum_k ReLU(W_e x_k + b_e)                     shared embedding, D -> 512 (dim_emb)
    w(X)   = ReLU(H_agg(h)),  H_agg = Linear(512, 512) - ReLU - Dropout(0.25) - Linear(512, m)
    r(X)   = ReLU(H_mix(h)),  H_mix: same shape, separate weights
    lambda = 1 / (1 + r)      in (0, 1]: the coefficient of the target task vector

w are the (unnormalised, >= 0) aggregation weights of the m sources; lambda_i mixes the target's
task vector with source i's. Every layer has PyTorch's default initialisation.

Variants of the reference (``MixVecMergedModel`` / ``DynamicMergedModel``): the output layer of
w is ``relu`` (default), ``sigmoid`` (w in (0, 1)) or ``softplus`` (w > 0, smooth), the
reference's ``output_layer``; ``mix_embed`` gives H_mix its own patch embedding,
``r = ReLU(H_mix((1/K) sum_k ReLU(W'_e x_k + b'_e)))``, the reference's ``fnn`` mix head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..models.abmil import packed_segments, patch_chunk_size, segment_mean
from ..models.dropout import Dropout
from .method_settings import OutputLayer

OUTPUT_LAYERS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus}


def _head(hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), Dropout(dropout), nn.Linear(hidden, n_out))


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
        self.agg = _head(hidden, n_sources, dropout) if agg_head else None
        self.mix = _head(hidden, n_sources, dropout) if mix_head else None
        self.mix_embed = nn.Linear(dim_in, hidden) if mix_head and mix_embed else None
        self.output = OUTPUT_LAYERS[output]()

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
        w = self.output(self.agg(h)) if self.agg is not None else None
        if self.mix is None:
            return w, None
        h_mix = self.embed_bags(x, mask, self.mix_embed) if self.mix_embed is not None else h
        return w, self.mix(h_mix).relu()
