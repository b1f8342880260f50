"""SurvMLE, time bins and risk scores against independent computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from steph.survival import (
    LabelSpec,
    risk_score,
    surv_labels,
    surv_mle_from_logits,
    surv_mle_loss,
    survival_curve,
    time_to_bin,
)


def reference_surv_mle(
    hazards: list[list[float]], bins: list[int], events: list[int], alpha: float, eps: float
) -> float:
    """SurvMLE written out per sample with explicit products and logs (float64 Python)."""
    total = 0.0
    for h, y, e in zip(hazards, bins, events, strict=True):
        surv_before = math.prod(1.0 - h[i] for i in range(y))  # alive at the start of bin y
        surv_after = surv_before * (1.0 - h[y])  # alive at the end of bin y
        uncensored = -e * (math.log(max(surv_before, eps)) + math.log(max(h[y], eps)))
        censored = -(1 - e) * math.log(max(surv_after, eps))
        total += (1 - alpha) * (uncensored + censored) + alpha * uncensored
    return total / len(bins)


def random_batch(seed: int, b: int = 7, t: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hazards = torch.rand(b, t, generator=g, dtype=torch.float64) * 0.98 + 0.01
    bins = torch.randint(0, t, (b,), generator=g)
    events = torch.randint(0, 2, (b,), generator=g)
    return hazards, bins, events


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surv_mle_matches_per_sample_reference(alpha: float, seed: int) -> None:
    hazards, bins, events = random_batch(seed)
    got = surv_mle_loss(hazards, bins, events, alpha=alpha, eps=1e-7)
    want = reference_surv_mle(hazards.tolist(), bins.tolist(), events.tolist(), alpha, 1e-7)
    assert float(got) == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_surv_mle_hand_derived_two_bins() -> None:
    # h = (0.2, 0.5) for both patients. Patient A: event in bin 1 -> U = -[log(1 - 0.2) + log(0.5)].
    # Patient B: censored in bin 0 -> C = -log(1 - 0.2). alpha = 0.5 -> loss = (U_A + 0.5 C_B) / 2.
    hazards = torch.tensor([[0.2, 0.5], [0.2, 0.5]], dtype=torch.float64)
    loss = surv_mle_loss(hazards, torch.tensor([1, 0]), torch.tensor([1, 0]), alpha=0.5)
    expected = (-(math.log(0.8) + math.log(0.5)) + 0.5 * -math.log(0.8)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    assert float(loss) == pytest.approx(0.5139313, abs=1e-6)


@pytest.mark.parametrize("seed", [3, 4])
def test_alpha_zero_is_logistic_hazard_nll(seed: int) -> None:
    """With alpha = 0, SurvMLE is the logistic-hazard NLL: per patient, the binary cross-entropy
    of the hazards against "event in this bin" summed over bins 0..y (pycox's formulation)."""
    hazards, bins, events = random_batch(seed, b=9, t=6)
    targets = torch.zeros_like(hazards)
    targets[torch.arange(len(bins)), bins] = events.to(hazards.dtype)
    bce = F.binary_cross_entropy(hazards, targets, reduction="none")
    upto = torch.arange(hazards.shape[1]).unsqueeze(0) <= bins.unsqueeze(1)
    expected = (bce * upto).sum(dim=1).mean()
    got = surv_mle_loss(hazards, bins, events, alpha=0.0)
    assert float(got) == pytest.approx(float(expected), rel=1e-10)


def test_eps_clamps_zero_probabilities() -> None:
    hazards = torch.tensor([[0.0, 0.3]], dtype=torch.float64)
    loss = surv_mle_loss(hazards, torch.tensor([0]), torch.tensor([1]), eps=1e-7)
    assert float(loss) == pytest.approx(-math.log(1e-7))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
    st.integers(0, 3),
    st.integers(0, 1),
    st.floats(0.0, 1.0),
)
def test_loss_finite_nonnegative_and_decreasing_in_alpha(
    h: list[float], y: int, e: int, alpha: float
) -> None:
    hazards = torch.tensor([h], dtype=torch.float64)
    args = (hazards, torch.tensor([y]), torch.tensor([e]))
    loss = surv_mle_loss(*args, alpha=alpha)
    assert math.isfinite(float(loss)) and float(loss) >= 0.0
    assert float(surv_mle_loss(*args, alpha=0.0)) >= float(loss) - 1e-12


def autograd_surv_mle(
    hazards: torch.Tensor, bins: torch.Tensor, events: torch.Tensor, alpha: float, eps: float
):
    """SurvMLE as plain tensor operators, differentiated by autograd through cumprod, gathers and clamps."""
    y, c = bins.view(-1, 1), 1.0 - events.view(-1, 1).to(hazards.dtype)
    surv = torch.cat([torch.ones_like(hazards[:, :1]), torch.cumprod(1.0 - hazards, dim=1)], dim=1)
    s_before = torch.gather(surv, 1, y).clamp(min=eps)
    s_after = torch.gather(surv, 1, y + 1).clamp(min=eps)
    h_y = torch.gather(hazards, 1, y).clamp(min=eps)
    uncensored = -(1.0 - c) * (torch.log(s_before) + torch.log(h_y))
    return ((1.0 - alpha) * (uncensored - c * torch.log(s_after)) + alpha * uncensored).mean()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_gradient_in_the_hazards_is_the_plain_operators(dtype: torch.dtype, alpha: float) -> None:
    """The loss's gradient in the hazards against autograd through the plain operators, with
    hazards of exactly 0 and 1 and survivals clamped at eps (their terms have no gradient), in
    fp32 and fp64: finite, and equal."""
    g = torch.Generator().manual_seed(int(alpha * 10))
    logits = 6 * torch.randn(64, 32, generator=g, dtype=dtype)
    logits[0, :5], logits[1, 3], logits[2, 0] = 40.0, -40.0, 200.0  # S~ below eps; h_y below eps; h = 1
    hazards = torch.sigmoid(logits)
    bins = torch.randint(0, 32, (64,), generator=g)
    bins[0], bins[1], bins[2] = 10, 3, 0
    events = torch.randint(0, 2, (64,), generator=g)
    events[1] = 1
    closed = hazards.clone().requires_grad_()
    plain = hazards.clone().requires_grad_()
    loss = surv_mle_loss(closed, bins, events, alpha=alpha, eps=1e-7)
    want = autograd_surv_mle(plain, bins, events, alpha, 1e-7)
    (2.5 * loss).backward()
    (2.5 * want).backward()
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    assert closed.grad is not None and plain.grad is not None and torch.isfinite(closed.grad).all()
    scale = float(plain.grad.abs().max())
    assert torch.allclose(closed.grad, plain.grad, rtol=1e-6, atol=1e-6 * scale)
    with torch.no_grad():  # no gradient wanted: the same value
        assert float(surv_mle_loss(closed, bins, events, alpha=alpha)) == float(loss.detach())


def test_bins_at_the_edges() -> None:
    days = torch.tensor([0.0, 364.0, 364.999, 365.0, 729.0, 730.0, 11314.0, 11315.0, 11680.0, 20000.0])
    assert time_to_bin(days).tolist() == [0, 0, 0, 1, 1, 2, 30, 31, 31, 31]


def test_bins_configurable() -> None:
    assert time_to_bin(torch.tensor([0.0, 29.9, 30.0, 95.0, 500.0]), bin_width=30.0, num_bins=4).tolist() == [
        0,
        0,
        1,
        3,
        3,
    ]


def test_risk_is_minus_summed_survival() -> None:
    hazards = torch.tensor([[0.1, 0.2, 0.5], [0.5, 0.5, 0.5]], dtype=torch.float64)
    surv = survival_curve(hazards)
    assert surv[0].tolist() == pytest.approx([0.9, 0.72, 0.36])
    assert risk_score(hazards).tolist() == pytest.approx([-(0.9 + 0.72 + 0.36), -(0.5 + 0.25 + 0.125)])
    assert float(risk_score(hazards)[1]) > float(risk_score(hazards)[0])  # higher hazards, higher risk


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("scale", [1.0, 0.375])
def test_loss_of_logits_and_its_gradient_are_autograds(
    dtype: torch.dtype, alpha: float, scale: float
) -> None:
    """SurvMLE of logits with precomputed labels (the training step's form) against autograd
    through sigmoid, cumprod, gathers and clamps: hazards of exactly 0 and 1, survivals and
    hazards below eps, a chunk's share of the batch."""
    g = torch.Generator().manual_seed(3 + int(alpha * 10))
    logits = 6 * torch.randn(64, 32, generator=g, dtype=dtype)
    logits[0, :5], logits[1, 3], logits[2, 0], logits[3, 7] = 40.0, -40.0, 200.0, -200.0
    bins = torch.randint(0, 32, (64,), generator=g)
    bins[0], bins[1], bins[2], bins[3] = 10, 3, 0, 7
    events = torch.randint(0, 2, (64,), generator=g)
    events[1] = events[3] = 1
    labels = LabelSpec(32, alpha, 1e-7).labels(bins, events, scale) if dtype == torch.float32 else None
    labels = labels or surv_labels(bins, events, 32, alpha=alpha, scale=scale, dtype=dtype)
    fused = logits.clone().requires_grad_()
    plain = logits.clone().requires_grad_()
    loss = surv_mle_from_logits(fused, labels)
    want = scale * autograd_surv_mle(torch.sigmoid(plain), bins, events, alpha, 1e-7)
    (1.5 * loss).backward()
    (1.5 * want).backward()
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    assert fused.grad is not None and plain.grad is not None and torch.isfinite(fused.grad).all()
    top = float(plain.grad.abs().max())
    assert torch.allclose(fused.grad, plain.grad, rtol=1e-6, atol=1e-6 * top)
    with torch.no_grad():  # no gradient wanted: the same value, by the same operators
        assert float(surv_mle_from_logits(fused, labels)) == float(loss.detach())
    reference = reference_surv_mle(
        torch.sigmoid(logits).tolist(), bins.tolist(), events.tolist(), alpha, 1e-7
    )
    assert float(loss.detach()) == pytest.approx(scale * reference, rel=1e-5)


def test_labels_say_which_bins_count() -> None:
    """Bag 0: event in bin 2; bag 1: censored in bin 1; 4 bins, alpha 0.25, two bags."""
    labels = surv_labels(torch.tensor([2, 1]), torch.tensor([1, 0]), 4, alpha=0.25)
    assert labels.index.tolist() == [[2, 3, 7], [1, 2, 6]]  # columns of [S~ (5) | h (4)]
    assert labels.weights.tolist() == [[0.5, 0.0, 0.5], [0.0, 0.375, 0.0]]
    assert labels.masks[0].tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]
    assert labels.at_y.tolist() == [[0, 0, 1, 0], [0, 1, 0, 0]]
    assert labels.time_bins == 4
