"""Discrete-time survival: time bins, the SurvMLE loss, survival curves and risk scores."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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

    Args:
        hazards: ``[B, T]`` hazards (after the sigmoid).
        bins: ``[B]`` bin indices (long).
        events: ``[B]`` event indicators (1 = event, 0 = censored).
    """
    y = bins.view(-1, 1).long()
    c = 1.0 - events.view(-1, 1).to(hazards.dtype)
    surv = torch.cumprod(1.0 - hazards, dim=1)
    surv_padded = torch.cat([torch.ones_like(surv[:, :1]), surv], dim=1)
    s_before = torch.gather(surv_padded, 1, y).clamp(min=eps)
    s_after = torch.gather(surv_padded, 1, y + 1).clamp(min=eps)
    h_y = torch.gather(hazards, 1, y).clamp(min=eps)
    uncensored = -(1.0 - c) * (torch.log(s_before) + torch.log(h_y))
    censored = -c * torch.log(s_after)
    loss = (1.0 - alpha) * (uncensored + censored) + alpha * uncensored
    return loss.mean()


def survival_curve(hazards: Tensor) -> Tensor:
    """S_j = prod_{i <= j} (1 - h_i), shape ``[B, T]``."""
    return torch.cumprod(1.0 - hazards, dim=1)


def risk_score(hazards: Tensor) -> Tensor:
    """Risk = -sum_j S_j (the reference's C-index input; higher = riskier), shape ``[B]``."""
    return -survival_curve(hazards).sum(dim=1)
