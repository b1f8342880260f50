"""``cosine-topk``: merge the target with its most similar sources, registered as a stephctl method.

With ``tau_t`` the target's task vector, ``tau_1..tau_m`` the sources' and ``cos`` the cosine
similarity of the flattened ABMIL encoder tensors, the method keeps the ``k`` sources most
similar to the target, ``S = top_k_i cos(tau_t, tau_i)``, and averages them with the target::

    theta_enc = theta0_enc + (tau_t + sum_{i in S} tau_i) / (1 + |S|)

The merged encoder is frozen and a new prediction head is trained on the target's training
split (the stephctl default :meth:`MergeMethod.train`). The method's settings are one frozen
dataclass: ``k`` is ``merge.cosine-topk.k`` in stephctl.yaml (or ``merge.options.k``) and
``--option k=2`` on the command line (folder ``cosine-topk-k2``); stephctl checks and types it
and derives the folder suffix, ``--list-methods`` and the error messages from the declaration.
The similarities go to ``similarity.csv`` next to the weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from steph.config import MergeConfig
from steph.errors import ConfigError
from steph.merging import MergeContext, MergeMethod, Table
from steph.merging.modules import FrozenEncoderHead
from steph.merging.settings import doc
from steph.models.abmil import ENCODER_KEYS
from steph.registry import Registry
from steph.task_vectors import add, flatten, mean, select


def similarities(ctx: MergeContext) -> Tensor:
    """``cos(tau_t, tau_i)`` over the encoder tensors for every source ``i``, shape ``[m]``."""
    target = flatten(ctx.target_vector, ENCODER_KEYS)
    sources = torch.stack([flatten(v, ENCODER_KEYS) for v in ctx.source_vectors])
    return torch.nn.functional.cosine_similarity(sources, target.unsqueeze(0), dim=1)


@dataclass(frozen=True, kw_only=True)
class CosineTopKSettings:
    """Settings of ``cosine-topk`` (``--option KEY=VALUE``; checked and typed by stephctl)."""

    k: int = field(default=3, metadata=doc("how many of the most similar sources join the target"))


class CosineTopK(MergeMethod):
    """Average of the target task vector and its ``k`` most similar source task vectors."""

    name = "cosine-topk"
    description = "theta0 + mean of tau_t and the k sources most cosine-similar to it (options.k); new head"
    reference = "stephctl plugin example (docs/extending.md)"
    settings_class: ClassVar[type | None] = CosineTopKSettings

    def check(self, config: MergeConfig, n_sources: int) -> None:
        super().check(config, n_sources)
        k = self.settings(config).k
        if not 1 <= k <= n_sources:
            raise ConfigError(
                f"merge.options.k = {k} for {self.name}: must be between 1 and the {n_sources} sources",
                hint="e.g. --option k=2",
            )

    def selected(self, ctx: MergeContext) -> list[int]:
        """Indices (into ``ctx.source_names``) of the ``k`` most similar sources, best first."""
        k = self.settings(ctx.config).k
        return similarities(ctx).topk(k).indices.tolist()

    def build(self, ctx: MergeContext) -> nn.Module:
        chosen = [ctx.source_vectors[i] for i in self.selected(ctx)]
        vector = mean([select(v, ENCODER_KEYS) for v in (ctx.target_vector, *chosen)])
        encoder = add(select(ctx.theta0, ENCODER_KEYS), vector)
        config = ctx.model_config
        return FrozenEncoderHead(
            encoder, dim_emb=config.dim_emb, time_bins=config.time_bins, dropout=config.dropout
        )

    def tables(
        self, model: nn.Module, ids: Sequence[str], extras: Mapping[str, Tensor], ctx: MergeContext
    ) -> dict[str, Table]:
        cos = similarities(ctx).tolist()
        chosen = set(self.selected(ctx))
        rows = [[name, round(cos[i], 6), int(i in chosen)] for i, name in enumerate(ctx.source_names)]
        return {"similarity.csv": (["source", "cosine", "selected"], rows)}


def register(registry: Registry[MergeMethod]) -> None:
    """Entry point of ``stephctl.merge_methods``: add the method to stephctl's registry."""
    registry.add(CosineTopK.name, CosineTopK())
