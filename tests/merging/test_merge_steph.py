"""STEPH's model: the merge formula, top-k, the regulariser and every ablation, on tiny tensors."""

from __future__ import annotations

import pytest
import torch
from _merge_helpers import DIM, bags, context, merge_config
from torch import nn

from steph.errors import ConfigError
from steph.merging import MERGE_METHODS
from steph.merging.hypernet import Hypernetwork, _head
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
    assert trainable["hypernet.heads.weight2"].grad[1].abs().sum() > 0  # H_mix's output layer
    assert not model.stack.base.requires_grad and not model.stack.vectors.requires_grad
    # frozen tensors are not saved; the heads' stacked tensors are saved as the two heads' layers
    pair = {n for n in trainable if n.startswith("hypernet.heads.")}
    heads = {
        f"hypernet.{h}.{layer}.{part}"
        for h in ("agg", "mix")
        for layer in "03"
        for part in ("weight", "bias")
    }
    assert set(model.state_dict()) == (set(trainable) - pair) | heads


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


# -- the hypernetwork's two heads as one stacked pair -------------------------------------------------
def _two_heads(dim_in: int, hidden: int, m: int, dropout: float, mix_embed: bool) -> nn.ModuleDict:
    """The hypernetwork's layers as separate modules, built in the order Hypernetwork builds them."""
    layers = nn.ModuleDict({"embed": nn.Linear(dim_in, hidden)})
    layers["agg"], layers["mix"] = _head(hidden, m, dropout), _head(hidden, m, dropout)
    if mix_embed:
        layers["mix_embed"] = nn.Linear(dim_in, hidden)
    return layers


@pytest.mark.parametrize("mix_embed", [False, True], ids=["shared-embedding", "fnn"])
def test_stacked_heads_are_the_two_heads_drawn_saved_and_loaded_as_such(mix_embed: bool) -> None:
    """Both heads run as one HeadPair. It draws the two heads' initial values, saves them under
    their names and in their order (agg.0.weight ... mix.3.bias), loads a state dict of two
    separate heads, and gives their outputs and gradients (to 1e-6)."""
    torch.manual_seed(3)
    net = Hypernetwork(DIM, 4, hidden=8, dropout=0.0, mix_embed=mix_embed)
    torch.manual_seed(3)
    reference = _two_heads(DIM, 8, 4, 0.0, mix_embed)
    saved, expected = net.state_dict(), reference.state_dict()
    assert list(saved) == list(expected)  # names and order of two separate heads
    assert all(torch.equal(saved[k], expected[k]) for k in expected)
    assert {n for n, _ in net.named_parameters()} >= {
        f"heads.{t}" for t in ("weight1", "bias1", "weight2", "bias2")
    }

    other = Hypernetwork(DIM, 4, hidden=8, dropout=0.0, mix_embed=mix_embed)
    other.load_state_dict(expected)  # a file of two separate heads loads into the pair
    assert net.heads is not None and other.heads is not None
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), other.parameters(), strict=True))

    x, mask = pad_bags(list(bags(3).values()))
    w, r = net(x, mask)
    assert w is not None and r is not None
    h = torch.relu(reference["embed"](x)).mul(mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    h_mix = h
    if mix_embed:
        h_mix = torch.relu(reference["mix_embed"](x)).mul(mask.unsqueeze(-1)).sum(1) / mask.sum(
            1, keepdim=True
        )
    w_ref, r_ref = torch.relu(reference["agg"](h)), torch.relu(reference["mix"](h_mix))
    assert torch.allclose(w, w_ref, atol=1e-6) and torch.allclose(r, r_ref, atol=1e-6)
    assert torch.allclose(net.head("agg", h.detach()), reference["agg"](h.detach()), atol=1e-6)

    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(w.shape, generator=g), torch.randn(r.shape, generator=g)
    ((w * a).sum() + (r * b).sum()).backward()
    ((w_ref * a).sum() + (r_ref * b).sum()).backward()
    pair = net.heads
    for i, head in enumerate(("agg", "mix")):
        first, last = reference[head][0], reference[head][3]
        assert torch.allclose(pair.weight1.grad[i], first.weight.grad, atol=1e-6)
        assert torch.allclose(pair.bias1.grad[i, 0], first.bias.grad, atol=1e-6)
        assert torch.allclose(pair.weight2.grad[i], last.weight.grad, atol=1e-6)
        assert torch.allclose(pair.bias2.grad[i, 0], last.bias.grad, atol=1e-6)
    assert torch.allclose(net.embed.weight.grad, reference["embed"].weight.grad, atol=1e-6)


def test_a_state_dict_missing_a_heads_entry_does_not_load_into_the_pair() -> None:
    net = Hypernetwork(DIM, 4, hidden=8)
    state = net.state_dict()
    del state["mix.3.bias"]
    with pytest.raises(
        RuntimeError, match=r"(?s)Missing key\(s\).*heads\.weight1.*Unexpected key\(s\).*agg\.0\.weight"
    ):
        Hypernetwork(DIM, 4, hidden=8).load_state_dict(state)
    assert Hypernetwork(DIM, 4, hidden=8, mix_head=False).agg is not None  # one head: no pair
