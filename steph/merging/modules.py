"""Building blocks shared by the merge methods: frozen task vectors and merged-encoder models.

Frozen inputs (theta0, task vectors, frozen expert encoders) are registered as *non-persistent*
buffers: they move with ``model.to(device)`` but stay out of ``state_dict()``, so what a method
saves is exactly what it learned.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..models.abmil import ENCODER_KEYS, encode
from ..task_vectors import FlatSpec, flat_spec, flatten, select, unflatten


class FrozenState(nn.Module):
    """A fixed state dict (e.g. merged encoder tensors) held as non-persistent buffers."""

    def __init__(self, state: Mapping[str, Tensor]) -> None:
        super().__init__()
        self.names = tuple(state)
        for i, key in enumerate(self.names):
            self.register_buffer(f"t{i}", state[key].detach().clone().float(), persistent=False)

    def as_dict(self) -> dict[str, Tensor]:
        return {key: getattr(self, f"t{i}") for i, key in enumerate(self.names)}


class VectorStack(nn.Module):
    """theta0 and N task vectors over ``keys``, flattened: ``base [P]`` and ``vectors [N, P]``.

    :meth:`merge` turns coefficients into parameters, ``theta(c) = theta0 + c @ vectors``:
    ``c [N]`` gives one parameter set (one matrix-vector product), ``c [B, N]`` one per bag
    (``[B, *shape]`` tensors, one matrix product).
    """

    base: Tensor
    vectors: Tensor

    def __init__(
        self,
        theta0: Mapping[str, Tensor],
        vectors: Sequence[Mapping[str, Tensor]],
        keys: Sequence[str] = ENCODER_KEYS,
    ) -> None:
        super().__init__()
        self.spec: FlatSpec = flat_spec(theta0, keys)
        self.register_buffer(
            "base", flatten(select(theta0, keys), keys).detach().float().clone(), persistent=False
        )
        stacked = torch.stack([flatten(select(v, keys), keys) for v in vectors]).detach().float()
        self.register_buffer("vectors", stacked, persistent=False)

    @property
    def n(self) -> int:
        return int(self.vectors.shape[0])

    def merge(self, coefficients: Tensor) -> dict[str, Tensor]:
        """``theta0 + coefficients @ vectors`` split back into named tensors (always in fp32,
        also under autocast: the merged weights are not rounded to bf16/fp16)."""
        with fp32_merge(self.base):
            # one parameter set [N]: a matrix-vector product; per-bag coefficients [B, N] are
            # the matrix product's operand as they are (a reshape to the same shape is still a
            # dispatch, and one more in the backward)
            if coefficients.dim() == 1:
                return unflatten(torch.addmv(self.base, self.vectors.t(), coefficients.float()), self.spec)
            rows = coefficients.dim() == 2
            c = coefficients.float() if rows else coefficients.float().reshape(-1, self.n)
            flat = torch.addmm(self.base.unsqueeze(0), c, self.vectors)
        return unflatten(flat if rows else flat.reshape(*coefficients.shape[:-1], -1), self.spec)


def fp32_merge(like: Tensor) -> contextlib.AbstractContextManager[object]:
    """Autocast off on ``like``'s device where it is on (entering the context costs about 18 µs
    where it is not): merged weights are built in fp32, not rounded to bf16/fp16."""
    kind = like.device.type
    return (
        torch.autocast(kind, enabled=False) if torch.is_autocast_enabled(kind) else contextlib.nullcontext()
    )


class StackedVectors(nn.Module):
    """The :class:`VectorStack` of several units (a target's folds, each its own base and
    vectors over the same keys) along a leading dimension, ``base [U, P]`` and ``vectors
    [U, N, P]``, for the stacked merge models (:mod:`steph.training.stacked`).

    :meth:`merge` is each unit's :meth:`VectorStack.merge`, ``theta = base_u + c @ vectors_u``
    as one batched product in fp32: ``c [U, N]`` gives one parameter set per unit (``[U,
    *shape]`` tensors), ``c [U n, N]`` one per bag, n bags a unit, unit after unit.

    Raises:
        ValueError: the stacks differ in keys, shapes or vector counts (the units do not stack).
    """

    base: Tensor
    vectors: Tensor

    def __init__(self, stacks: Sequence[VectorStack]) -> None:
        super().__init__()
        first = stacks[0]
        if any(s.spec != first.spec or s.vectors.shape != first.vectors.shape for s in stacks):
            raise ValueError("task vectors of different keys, shapes or counts do not stack")
        self.spec: FlatSpec = first.spec
        self.register_buffer("base", torch.stack([s.base for s in stacks]), persistent=False)
        self.register_buffer("vectors", torch.stack([s.vectors for s in stacks]), persistent=False)

    def merge(self, coefficients: Tensor) -> dict[str, Tensor]:
        units, n = self.vectors.shape[0], self.vectors.shape[1]
        with fp32_merge(self.base):
            c = coefficients.float().view(units, -1, n)
            flat = torch.baddbmm(self.base.unsqueeze(1), c, self.vectors)
        return unflatten(flat.view(coefficients.shape[0], -1), self.spec)


class FrozenEncoderHead(nn.Module):
    """A fixed (merged) ABMIL encoder and ``pred_head`` Linear(E, T): a new trainable head, or,
    given ``head`` (``pred_head.weight`` / ``pred_head.bias``), that head frozen. It accepts packed
    bags (:func:`~steph.models.abmil.packed_bags`)."""

    packs_bags = True

    def __init__(
        self,
        encoder: Mapping[str, Tensor],
        *,
        dim_emb: int,
        time_bins: int,
        dropout: float,
        head: Mapping[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = FrozenState(select(encoder, ENCODER_KEYS))
        self.dropout = dropout
        self.pred_head = nn.Linear(dim_emb, time_bins)
        if head is not None:
            with torch.no_grad():
                self.pred_head.weight.copy_(head["pred_head.weight"])
                self.pred_head.bias.copy_(head["pred_head.bias"])
            self.pred_head.requires_grad_(False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        z = encode(self.encoder.as_dict(), x, mask, dropout=self.dropout, training=self.training)
        logits: Tensor = self.pred_head(z)
        return logits
