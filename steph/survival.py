"""Discrete-time survival: time bins, the SurvMLE loss, survival curves and risk scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .models.closed_form import closed_form


@dataclass(frozen=True)
class SurvivalTargets:
    """Patients to train on: ids with their time (days), event and time bin."""

    ids: list[str]
    times: Tensor
    events: Tensor
    bins: Tensor

    def __len__(self) -> int:
        return len(self.ids)


def time_to_bin(t_days: Tensor, *, bin_width: float = 365.0, num_bins: int = 32) -> Tensor:
    """Bin index of each time: bin j = [j w, (j + 1) w), the last bin open-ended.

    With the defaults the cut points are 0, 365, ..., 11680 days (docs/train-source.md, "Protocol"), so
    0 and 364 fall in bin 0, 365 in bin 1, 11315 and everything beyond in bin 31.

    >>> time_to_bin(torch.tensor([0.0, 364.0, 365.0, 11680.0, 1e6])).tolist()
    [0, 0, 1, 31, 31]
    """
    bins = torch.floor(t_days.to(torch.float64) / bin_width).to(torch.long)
    return bins.clamp_(0, num_bins - 1)


def surv_mle_loss(
    hazards: Tensor, bins: Tensor, events: Tensor, *, alpha: float = 0.5, eps: float = 1e-7
) -> Tensor:
    """SurvMLE, the discrete-time negative log-likelihood of the reference (docs/train-source.md, "Protocol").

    With hazards h in (0, 1)^{B x T}, bin labels y, censoring c = 1 - e and the survival padded
    with a leading one, S~ = [1, S_1, ..., S_T] where S_j = prod_{i <= j} (1 - h_i):

        U = -(1 - c) [log max(S~_y, eps) + log max(h_y, eps)]     (event in bin y)
        C = -c log max(S~_{y+1}, eps)                              (alive through bin y)
        loss = mean_b [ (1 - alpha)(U + C) + alpha U ] = mean_b [ U + (1 - alpha) C ]

    Written as the reference computes it; autograd differentiates it. Training computes the same
    loss from the logits with its gradient in closed form (:func:`surv_mle_from_logits`).

    Args:
        hazards: ``[B, T]`` hazards (after the sigmoid).
        bins: ``[B]`` bin indices (long).
        events: ``[B]`` event indicators (1 = event, 0 = censored).
    """
    y = bins.view(-1, 1).long()
    c = 1.0 - events.view(-1, 1).to(hazards.dtype)
    surv = torch.cumprod(1.0 - hazards, dim=1)
    surv_padded = torch.cat([torch.ones_like(surv[:, :1]), surv], dim=1)
    s_before = torch.gather(surv_padded, 1, y)
    s_after = torch.gather(surv_padded, 1, y + 1)
    h_y = torch.gather(hazards, 1, y)
    uncensored = -(1.0 - c) * (torch.log(s_before.clamp(min=eps)) + torch.log(h_y.clamp(min=eps)))
    censored = -c * torch.log(s_after.clamp(min=eps))
    return ((1.0 - alpha) * (uncensored + censored) + alpha * uncensored).mean()


@dataclass(frozen=True)
class SurvLabels:
    """The label tensors SurvMLE needs for one chunk of bags, built once where the chunk is staged
    (:func:`surv_labels`), so that a training step spends no operators on them.

    ``index [n, 3]``: per bag the columns ``y, y + 1`` of the padded survival ``S~`` and ``y`` of
    the hazards in ``[S~ | h]`` (``[n, 2T + 1]``, the hazards' columns from ``T + 1``: one
    gather takes all three); ``weights [n, 3]``: the weights of their logs in the loss, ``(1 - c) / B``,
    ``(1 - alpha) c / B``, ``(1 - c) / B`` (B: the bags the loss averages over, times the chunk's
    share of the batch); ``masks [n, 2, T]``: ``[i < y]`` and ``[i <= y]``; ``at_y [n, T]``:
    ``[i = y]``; ``alpha`` and ``eps``: the loss's (``eps`` clamps the logs)."""

    index: Tensor
    weights: Tensor
    masks: Tensor
    at_y: Tensor
    alpha: float
    eps: float

    @property
    def time_bins(self) -> int:
        return int(self.at_y.shape[1])


@dataclass(frozen=True)
class LabelSpec:
    """What :func:`surv_labels` needs besides the labels: the model's time bins and the loss's
    ``alpha`` and ``eps``; a batch's chunks get their :class:`SurvLabels` where they are built."""

    time_bins: int
    alpha: float = 0.5
    eps: float = 1e-7

    def labels(self, bins: Tensor, events: Tensor, scale: float = 1.0) -> SurvLabels:
        return surv_labels(bins, events, self.time_bins, alpha=self.alpha, eps=self.eps, scale=scale)


def surv_labels(
    bins: Tensor,
    events: Tensor,
    time_bins: int,
    *,
    alpha: float = 0.5,
    eps: float = 1e-7,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> SurvLabels:
    """:class:`SurvLabels` of bags with bin labels ``bins [n]`` and ``events [n]`` (1 = event),
    for hazards over ``time_bins`` bins; the loss is ``scale`` times the mean over the n bags.
    Built with NumPy on the host (a few microseconds an array, where each torch operator costs a
    few more) and put on the labels' device; ``dtype``: float32 or float64."""
    kinds = {torch.float32: np.float32, torch.float64: np.float64}
    if dtype not in kinds:
        raise ValueError(f"SurvMLE labels are float32 or float64, not {dtype}")
    kind = kinds[dtype]
    y = bins.detach().cpu().numpy().astype(np.int64).reshape(-1, 1)
    event = events.detach().cpu().numpy().astype(np.float64).reshape(-1, 1)
    share = scale / y.shape[0]
    weights = np.concatenate([event * share, (1.0 - event) * ((1.0 - alpha) * share), event * share], axis=1)
    offset = np.arange(time_bins).reshape(1, -1) - y  # i - y
    masks = np.stack([offset < 0, offset <= 0], axis=1)
    index = np.concatenate([y, y + 1, y + time_bins + 1], axis=1)  # columns of [S~ | h]
    arrays = (index, weights.astype(kind), masks.astype(kind), (offset == 0).astype(kind))
    index_t, weights_t, masks_t, at_y = (torch.from_numpy(a).to(bins.device) for a in arrays)
    return SurvLabels(index_t, weights_t, masks_t, at_y, alpha, eps)


def surv_mle_from_logits(logits: Tensor, labels: SurvLabels) -> Tensor:
    """SurvMLE of the hazards ``sigmoid(logits)`` (:func:`surv_mle_loss`, times the labels'
    scale), with the gradient in the logits computed with the loss, in closed form. With
    ``h = sigmoid(l)``, ``dh/dl = h (1 - h)`` turns the hazards' gradient into (the bracket
    terms only where their ``max`` is not at ``eps``)

        dloss/dl_i = h_i [ (1 - c)/B [i < y] + (1 - alpha) c/B [i <= y] ] - (1 - c)/B [i = y] (1 - h_y)

    which has no division, so hazards of exactly 0 or 1 need no special case. The loss is
    ``-sum_b sum_j weights_bj log max(v_bj, eps)`` over ``v_b = (S~_y, S~_{y+1}, h_y)``: the same
    terms as :func:`surv_mle_loss`, summed in another order (equal to rounding).
    """
    return closed_form(lambda gradient: _surv_mle_from_logits(logits, labels, gradient=gradient), logits)


def surv_mle_by_unit(logits: Tensor, labels: SurvLabels, units: int) -> tuple[Tensor, Tensor]:
    """:func:`surv_mle_from_logits` of bags that belong to ``units`` training units, the same
    number each, laid out unit after unit (:mod:`steph.training.stacked`): the loss (the sum
    of the units' losses, with its closed-form gradient) and each unit's loss ``[units]``
    (detached). The rows of unit u are ``logits[u n : (u + 1) n]``, ``n = B / units``."""
    if logits.shape[0] % units:
        raise ValueError(f"{logits.shape[0]} bags do not split into {units} units of the same size")
    per_unit: list[Tensor] = []
    loss = closed_form(
        lambda gradient: _surv_mle_from_logits(logits, labels, gradient=gradient, units=units, out=per_unit),
        logits,
    )
    return loss, per_unit[0]


def _surv_mle_from_logits(
    logits: Tensor,
    labels: SurvLabels,
    *,
    gradient: bool,
    units: int = 0,
    out: list[Tensor] | None = None,
) -> tuple[Tensor, Tensor | None]:
    hazards = torch.sigmoid(logits)
    alive = 1.0 - hazards
    padded = torch.cumprod(torch.nn.functional.pad(alive, (1, 0), value=1.0), dim=1)
    values = torch.cat([padded, hazards], dim=1).gather(1, labels.index)
    terms = values.clamp(min=labels.eps).log_() * labels.weights
    if units:
        each = terms.view(units, -1).sum(dim=1).neg_()
        assert out is not None
        out.append(each.detach())
        loss = each.sum()
    else:
        loss = -terms.sum()
    if not gradient:
        return loss, None
    live = (values >= labels.eps) * labels.weights
    inside = torch.bmm(live[:, None, :2], labels.masks).squeeze(1)
    grad = hazards * inside - (live[:, 2:] * labels.at_y) * alive
    return loss, grad


def survival_curve(hazards: Tensor) -> Tensor:
    """S_j = prod_{i <= j} (1 - h_i), shape ``[B, T]``."""
    return torch.cumprod(1.0 - hazards, dim=1)


def risk_score(hazards: Tensor) -> Tensor:
    """Risk = -sum_j S_j (the reference's C-index input; higher = riskier), shape ``[B]``."""
    return -survival_curve(hazards).sum(dim=1)
