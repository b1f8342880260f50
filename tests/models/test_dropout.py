"""steph.models.dropout: inverted dropout with a CPU mask cut from 64-bit random words."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from steph.models.abmil import ABMIL
from steph.models.dropout import (
    LEVELS,
    SMALL,
    Dropout,
    bernoulli_masks,
    drop_probability,
    dropout,
    keep_mask,
)


def test_off_in_eval_and_at_zero() -> None:
    x = torch.randn(5, 7)
    assert dropout(x, 0.25, training=False) is x
    assert dropout(x, 0.0) is x


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_rejects_probabilities_outside_zero_one(p: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        dropout(torch.ones(3), p)


def test_one_drops_everything() -> None:
    x = torch.randn(4, 9, requires_grad=True)
    y = dropout(x, 1.0)
    assert torch.equal(y, torch.zeros_like(x))
    y.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("p", [0.25, 0.1, 0.5, 0.9])
def test_drop_rate_and_scale(p: float) -> None:
    """Dropped elements are exactly 0, kept ones exactly x / (1 - p'), and the drop rate over
    4 M elements is p' within 5 standard errors."""
    torch.manual_seed(0)
    x = torch.rand(2000, 2000) + 0.5
    y = dropout(x, p)
    q = drop_probability(p)
    assert abs(q - p) <= 0.5 / LEVELS
    dropped = y == 0
    rate = float(dropped.double().mean())
    assert abs(rate - q) < 5 * math.sqrt(q * (1 - q) / x.numel())
    expected = x * torch.tensor(LEVELS / (LEVELS - round(p * LEVELS)), dtype=torch.float32)
    assert torch.equal(y[~dropped], expected[~dropped])
    # E[y] = x: the mean of y / x is 1 within 5 standard errors of a scaled Bernoulli
    ratio = float((y / x).double().mean())
    assert abs(ratio - 1) < 5 * math.sqrt(q / (1 - q) / x.numel())


def test_lanes_are_independent() -> None:
    """The four 16-bit draws of a random word are independent: neighbours' drops agree as often
    as two independent Bernoulli(p) draws, in each of the four positions of a word."""
    torch.manual_seed(1)
    keep = keep_mask((1_000_000, 4), 0.5, torch.float32) > 0  # one word per row
    for lane in range(4):
        assert abs(float(keep[:, lane].double().mean()) - 0.5) < 5 * 0.5 / 1000
    same = (keep[:, :-1] == keep[:, 1:]).double().mean(dim=0)
    assert torch.all((same - 0.5).abs() < 5 * 0.5 / 1000)


def test_odd_sizes_and_dtypes() -> None:
    torch.manual_seed(2)
    assert dropout(torch.ones(0, 5), 0.5).shape == (0, 5)
    assert float(dropout(torch.full((), 2.0), 0.5)) in (0.0, 4.0)
    assert keep_mask((0, 5), 0.5, torch.float32).shape == (0, 5)
    assert keep_mask((), 0.5, torch.float32).shape == () and float(keep_mask((), 0.5, torch.float32)) in (
        0.0,
        2.0,
    )
    for shape in [(1,), (3, 5), (2, 3, 7), (4, 8), (SMALL + 1,), (3, SMALL // 2 + 3), (2, 2, SMALL // 4)]:
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            x = torch.ones(shape, dtype=dtype)
            y = dropout(x, 0.25)
            assert y.shape == x.shape and y.dtype == dtype
            scale = torch.tensor(4 / 3, dtype=dtype)
            assert set(y.unique().tolist()) <= {0.0, float(scale)}


def test_gradient_is_the_mask() -> None:
    torch.manual_seed(3)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.25)
    g = torch.randn_like(y)
    y.backward(g)
    scale = (y / x).detach()
    assert x.grad is not None
    assert torch.allclose(x.grad, g * scale, atol=1e-6)


def test_seeded_runs_repeat() -> None:
    x = torch.randn(100, 100)
    torch.manual_seed(4)
    a = dropout(x, 0.25)
    torch.manual_seed(4)
    b = dropout(x, 0.25)
    assert torch.equal(a, b)
    assert not torch.equal(a, dropout(x, 0.25))


def test_small_tensors_take_torchs_draws_and_large_ones_not() -> None:
    for rows, torchs in ((SMALL // 8 - 1, True), (SMALL // 8, False)):
        x = torch.randn(rows, 8)
        torch.manual_seed(11)
        ours = dropout(x, 0.25)
        torch.manual_seed(11)
        assert torch.equal(ours, F.dropout(x, 0.25, True)) is torchs


def test_bernoulli_masks_are_torchs_draws() -> None:
    x = torch.randn(60, 40)
    torch.manual_seed(6)
    with bernoulli_masks():
        ours = dropout(x, 0.25)
    torch.manual_seed(6)
    assert torch.equal(ours, F.dropout(x, 0.25, True))


def test_module_is_a_drop_in() -> None:
    layer = Dropout(0.25)
    assert isinstance(layer, torch.nn.Dropout) and layer.state_dict() == {}
    x = torch.randn(10, 10)
    assert layer.eval()(x) is x
    torch.manual_seed(7)
    y = layer.train()(x)
    torch.manual_seed(7)
    assert torch.equal(y, dropout(x, 0.25))


def test_abmil_draws_through_it() -> None:
    """ABMIL's attention branches drop with this dropout: same draws as calling it by hand."""
    torch.manual_seed(8)
    model = ABMIL(6, dim_emb=8, dim_attn=4, dropout=0.25).train()
    x = torch.randn(1, 30, 6)
    torch.manual_seed(9)
    out = model(x)
    torch.manual_seed(9)
    h = torch.relu(model.feat_proj[0](x))
    a = dropout(torch.tanh(model.attention_net.attention_a[0](h)), 0.25)
    g = dropout(torch.sigmoid(model.attention_net.attention_b[0](h)), 0.25)
    s = model.attention_net.attention_c(a * g).squeeze(-1)
    z = torch.bmm(torch.softmax(s, dim=1).unsqueeze(1), h).squeeze(1)
    assert torch.allclose(out, model.pred_head(z), atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_uses_torchs_kernel() -> None:
    x = torch.randn(100, 100, device="cuda")
    torch.manual_seed(10)
    ours = dropout(x, 0.25)
    torch.manual_seed(10)
    assert torch.equal(ours, F.dropout(x, 0.25, True))
