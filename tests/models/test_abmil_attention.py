"""capture_attention: the weights ABMIL pools with, collected without changing forward."""

from __future__ import annotations

import doctest

import torch

from steph.models import abmil
from steph.models.abmil import ABMIL, capture_attention


def test_captured_attention_is_the_masked_softmax_of_the_gated_scores() -> None:
    torch.manual_seed(0)
    model = ABMIL(6, dim_emb=8, dim_attn=5).eval()
    x = torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    with capture_attention() as maps:
        logits = model(x, mask)
    assert len(maps) == 1
    alpha = maps[0]
    p = dict(model.named_parameters())
    for b in range(2):
        k = int(mask[b].sum())
        h = torch.relu(x[b, :k] @ p["feat_proj.0.weight"].T + p["feat_proj.0.bias"])
        a = torch.tanh(h @ p["attention_net.attention_a.0.weight"].T + p["attention_net.attention_a.0.bias"])
        g = torch.sigmoid(
            h @ p["attention_net.attention_b.0.weight"].T + p["attention_net.attention_b.0.bias"]
        )
        s = (a * g) @ p["attention_net.attention_c.weight"].T + p["attention_net.attention_c.bias"]
        expected = torch.softmax(s.squeeze(-1), dim=0)
        torch.testing.assert_close(alpha[b, :k], expected, atol=1e-6, rtol=1e-5)
        assert float(alpha[b, k:].abs().sum()) == 0.0
        torch.testing.assert_close(logits[b], model.pred_head(expected @ h), atol=1e-6, rtol=1e-5)


def test_nothing_is_collected_outside_the_block() -> None:
    model = ABMIL(3, dim_emb=4, dim_attn=2).eval()
    with capture_attention() as maps:
        pass
    model(torch.ones(1, 2, 3))
    assert maps == []


def test_doctests() -> None:
    assert doctest.testmod(abmil).failed == 0
