"""STEPH's model: the merge formula, top-k, the regulariser and every ablation, on tiny tensors."""

from __future__ import annotations

import pytest
import torch
from _merge_helpers import DIM, bags, context, merge_config

from steph.errors import ConfigError
from steph.merging import MERGE_METHODS
from steph.merging.steph_method import StephModel
from steph.models.abmil import ENCODER_KEYS, encode
from steph.training.batching import pad_bags


def build(**merge: object) -> StephModel:
    """A STEPH model over 4 sources (top-k 3 unless given)."""
    merge.setdefault("top_k", 3)
    torch.manual_seed(0)
    model = MERGE_METHODS.get("steph").build(context(**merge))
    assert isinstance(model, StephModel)
    return model


def naive_merge(model: StephModel, w: torch.Tensor, lam: torch.Tensor, ctx_sources: int = 4) -> list[dict]:
    """theta0 + sum_{i in S} w_i (lambda_i tau_t + (1 - lambda_i) tau_s_i), bag by bag, in float64."""
    ctx = context(ctx_sources)
    out = []
    for b in range(w.shape[0]):
        chosen = (
            w[b].topk(model.settings.top_k).indices.tolist() if model.settings.sparse else range(w.shape[1])
        )
        params = {}
        for key in ENCODER_KEYS:
            theta = ctx.theta0[key].double().clone()
            for i in chosen:
                mixed = lam[b, i] * ctx.target_vector[key] + (1 - lam[b, i]) * ctx.source_vectors[i][key]
                theta += w[b, i].double() * mixed.double()
            params[key] = theta
        out.append(params)
    return out


def test_batched_merge_equals_the_formula_bag_by_bag() -> None:
    model = build(top_k=2).eval()
    data = list(bags(4).values())
    x, mask = pad_bags(data)
    with torch.no_grad():
        w, lam = model.mixing(x, mask)
        merged = model.stack.merge(model.coefficients(w, lam, model.select(w)))
        logits = model(x, mask).logits
    reference = naive_merge(model, w, lam)
    for b, bag in enumerate(data):
        for key in ENCODER_KEYS:
            assert torch.allclose(merged[key][b].double(), reference[b][key], atol=1e-6), key
        z = encode({k: v.float() for k, v in reference[b].items()}, bag.unsqueeze(0))
        assert torch.allclose(logits[b], model.pred_head(z)[0], atol=1e-5)


def test_padding_does_not_change_a_bag() -> None:
    model = build().eval()
    data = list(bags(3).values())
    x, mask = pad_bags(data)
    with torch.no_grad():
        batched = model(x, mask)
        alone = [model(bag.unsqueeze(0)) for bag in data]
    for b in range(len(data)):
        assert torch.allclose(batched.logits[b], alone[b].logits[0], atol=1e-5)
        assert torch.allclose(batched.extras["w"][b], alone[b].extras["w"][0], atol=1e-6)


def test_lambda_one_with_weight_on_one_source_is_theta0_plus_w_tau_target() -> None:
    model = build(mix="fixed", fixed_lambda=1.0, weights="global", top_k=1)
    ctx = context()
    with torch.no_grad():
        model.global_w.copy_(torch.tensor([0.0, 0.7, 0.0, 0.0]))
        x, mask = pad_bags(list(bags(2).values()))
        w, lam = model.mixing(x, mask)
        merged = model.stack.merge(model.coefficients(w, lam, model.select(w)))
    for key in ENCODER_KEYS:
        expected = ctx.theta0[key] + 0.7 * ctx.target_vector[key]
        assert torch.allclose(merged[key][0], expected, atol=1e-6) and torch.allclose(
            merged[key][1], expected, atol=1e-6
        )


def test_lambda_zero_uses_source_vectors_only() -> None:
    model = build(mix="fixed", fixed_lambda=0.0, weights="global", top_k=2)
    ctx = context()
    with torch.no_grad():
        model.global_w.copy_(torch.tensor([0.2, 0.0, 0.5, 0.1]))
        w, lam = model.mixing(torch.zeros(1, 3, DIM), None)
        merged = model.stack.merge(model.coefficients(w, lam, model.select(w)))
    key = "feat_proj.0.weight"
    expected = ctx.theta0[key] + 0.2 * ctx.source_vectors[0][key] + 0.5 * ctx.source_vectors[2][key]
    assert torch.allclose(merged[key][0], expected, atol=1e-6)
    assert model.hypernet is None and not any(n.startswith("hypernet") for n, _ in model.named_parameters())


def test_top_k_selects_the_largest_weights() -> None:
    model = build(top_k=3)
    w = torch.tensor([[0.1, 0.9, 0.0, 0.5], [2.0, 0.3, 0.4, 0.2]])
    assert model.select(w).tolist() == [[True, True, False, True], [True, True, True, False]]
    dense = build(sparse=False)
    assert dense.select(w).all()


def test_regulariser_matches_the_formula() -> None:
    model = build(top_k=2, gamma=0.5, beta=0.25)
    w = torch.tensor([[1.0, 0.0, 2.0, 0.5]])
    lam = torch.tensor([[0.5, 1.0, 0.25, 0.8]])
    sel = model.select(w)  # sources 0 and 2
    z = torch.log(torch.exp(w).sum()) ** 2
    expected = 0.5 * (z + (1.0 + 2.0) / 2) + 0.25 * (0.5**2 + 0.25**2) / 2
    assert torch.allclose(model.regulariser(w, lam, sel), expected)
    fixed = build(mix="fixed", top_k=2, gamma=0.5)
    assert torch.allclose(fixed.regulariser(w, lam, sel), 0.5 * (z + 1.5))


def formula_by_autograd(
    w: torch.Tensor,
    lam: torch.Tensor,
    sel: torch.Tensor,
    gamma: float,
    beta: float,
    sparse: bool,
    learns: bool,
) -> torch.Tensor:
    """The regularisers as the reference writes them, in float64, for autograd to differentiate."""
    n = sel.sum(dim=1)
    aggregation = torch.logsumexp(w, dim=1) ** 2
    if sparse:
        aggregation = aggregation + (w * sel).sum(dim=1) / n
    loss = gamma * aggregation.mean()
    if learns:
        loss = loss + beta * ((lam**2 * sel).sum(dim=1) / n).mean()
    return loss


@pytest.mark.parametrize(
    "merge",
    [
        {"top_k": 2, "gamma": 0.5, "beta": 0.25},
        {"sparse": False, "gamma": 0.3, "beta": 0.7},
        {"mix": "fixed", "top_k": 2, "gamma": 0.5},
    ],
)
def test_regulariser_gradient_in_closed_form_equals_autograd_of_the_formula(merge: dict) -> None:
    """The closed-form backward (``regulariser_terms``) against autograd through the formula in
    float64: loss and both gradients, top-k or all sources, learned or fixed lambda."""
    model = build(**merge)
    g = torch.Generator().manual_seed(5)
    w = (torch.randn(6, 4, generator=g) * 2).requires_grad_()
    lam = torch.rand(6, 4, generator=g).requires_grad_()
    sel = model.select(w.detach())
    loss = model.regulariser(w, lam, sel)
    loss.backward()
    s = model.settings
    w64, lam64 = w.detach().double().requires_grad_(), lam.detach().double().requires_grad_()
    expected = formula_by_autograd(
        w64, lam64, sel.double(), float(s.gamma), s.beta, s.sparse, s.learns_lambda
    )
    expected.backward()
    assert loss.dtype == torch.float32 and abs(float(loss.detach()) - float(expected.detach())) < 1e-6
    assert w.grad is not None and torch.allclose(w.grad.double(), w64.grad, atol=1e-6)
    if s.learns_lambda:
        assert lam.grad is not None and torch.allclose(lam.grad.double(), lam64.grad, atol=1e-6)
        assert lam.grad.abs().sum() > 0
    else:  # a fixed lambda has no term: no gradient from the regulariser
        assert lam.grad is None
    with torch.no_grad():  # the predictions' path: the loss without its gradient
        assert torch.equal(model.regulariser(w, lam, sel), loss.detach())


def test_gradients_reach_hypernet_and_head_only() -> None:
    model = build().train()
    x, mask = pad_bags(list(bags(3).values()))
    out = model(x, mask)
    (out.logits.sum() + out.aux_loss).backward()
    trainable = dict(model.named_parameters())
    assert set(trainable) == {n for n in trainable if n.startswith(("hypernet.", "pred_head."))}
    assert trainable["hypernet.embed.weight"].grad.abs().sum() > 0
    assert trainable["hypernet.mix.3.weight"].grad is not None
    assert not model.stack.base.requires_grad and not model.stack.vectors.requires_grad
    assert set(model.state_dict()) == set(trainable)  # frozen tensors are not saved


def test_global_lambda_starts_at_one_and_learns() -> None:
    model = build(mix="global")
    assert model.global_r is not None and torch.equal(model.global_r, torch.zeros(4))
    x, mask = pad_bags(list(bags(2).values()))
    _, lam = model.mixing(x, mask)
    assert torch.equal(lam, torch.ones(2, 4))
    model(x, mask).aux_loss.backward()
    assert model.global_r.grad.abs().sum() > 0  # clamp (not relu) passes the gradient at r = 0


def test_global_weights_are_shared_by_every_bag() -> None:
    model = build(weights="global")
    assert torch.allclose(model.global_w, torch.full((4,), 0.25))
    x, mask = pad_bags(list(bags(3).values()))
    w, _ = model.mixing(x, mask)
    assert torch.equal(w[0], w[2]) and model.hypernet is not None and model.hypernet.agg is None


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({}, "steph"),
        ({"mix": "fixed", "fixed_lambda": 0.0}, "steph-fixed-lambda0"),
        ({"mix": "fixed"}, "steph-fixed-lambda1"),
        ({"mix": "global"}, "steph-global-lambda"),
        ({"weights": "global"}, "steph-global-w"),
        ({"sparse": False}, "steph-dense"),
        ({"top_k": 3, "gamma": 0.05}, "steph-top3-gamma0.05"),
    ],
)
def test_ablation_folder_names(settings: dict, name: str) -> None:
    assert MERGE_METHODS.get("steph").run_name(merge_config(**settings)) == name


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"top_k": 5}, "only 4 source"),
        ({"fixed_lambda": 0.0}, "mix: fixed"),
        ({"mix": "fixed", "beta": 0.1}, "no effect"),
        ({"sparse": False, "top_k": 2}, "no effect"),
        ({"options": {"scale": 1.0}}, "unknown option"),
    ],
)
def test_bad_settings_are_refused(settings: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        MERGE_METHODS.get("steph").check(merge_config(**{"top_k": 3, **settings}), 4)
