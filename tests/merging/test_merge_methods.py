"""The baselines' math, and the method contract over every registered method."""

from __future__ import annotations

import _merge_reference as ref
import pytest
import torch
from _merge_helpers import bags, context
from torch import nn

from steph.checkpoints import state_bytes
from steph.config import MergeConfig
from steph.errors import ConfigError, UnknownNameError
from steph.merging import MERGE_METHODS, list_methods
from steph.merging.adamerging import AdaMergingModel, regularise_coefficients
from steph.merging.modules import FrozenEncoderHead
from steph.merging.roupkt import ExpertMLPs, RouPKTModel
from steph.models.abmil import ENCODER_KEYS, encode
from steph.training.batching import pad_bags
from steph.training.loop import ModelOutput
from steph.training.optim import build_optimizer

KEY = "attention_net.attention_a.0.weight"


def vectors(ctx) -> list[dict[str, torch.Tensor]]:
    return [ctx.target_vector, *ctx.source_vectors]


def encoder_of(model: FrozenEncoderHead) -> dict[str, torch.Tensor]:
    return model.encoder.as_dict()


def test_model_avg_is_theta0_plus_mean_task_vector() -> None:
    ctx = context(3)
    model = MERGE_METHODS.get("model-avg").build(ctx)
    expected = ctx.theta0[KEY] + sum(v[KEY] for v in vectors(ctx)) / 4
    assert torch.allclose(encoder_of(model)[KEY], expected, atol=1e-6)


def test_task_arithmetic_scales_the_sum() -> None:
    ctx = context(3, options={"scale": 0.5})
    model = MERGE_METHODS.get("task-arithmetic").build(ctx)
    expected = ctx.theta0[KEY] + 0.5 * sum(v[KEY] for v in vectors(ctx))
    assert torch.allclose(encoder_of(model)[KEY], expected, atol=1e-6)
    assert MERGE_METHODS.get("task-arithmetic").run_name(ctx.config) == "task-arithmetic-scale0.5"


def test_ties_merges_all_vectors_jointly_with_disjoint_mean() -> None:
    ctx = context(3, options={"density": 0.3})
    model = MERGE_METHODS.get("ties").build(ctx)
    merged = ref.unflat(ref.ties([ref.flat(v) for v in vectors(ctx)], 0.3, "mean"), ctx.theta0)
    assert torch.allclose(encoder_of(model)[KEY], ctx.theta0[KEY] + merged[KEY].float(), atol=1e-6)
    with pytest.raises(ConfigError, match="density"):
        MERGE_METHODS.get("ties").check(MergeConfig(options={"density": 1.5}), 3)


def test_data_free_methods_train_only_a_new_head() -> None:
    model = MERGE_METHODS.get("model-avg").build(context(2, options={"head": "trained"}))
    assert {n for n, _ in model.named_parameters()} == {"pred_head.weight", "pred_head.bias"}


def test_adamerging_starts_at_model_average_and_learns_coefficients() -> None:
    ctx = context(3, gamma=0.1)
    model = MERGE_METHODS.get("adamerging").build(ctx)
    assert isinstance(model, AdaMergingModel)
    assert torch.allclose(model.coefficients, torch.full((4,), 0.25))
    merged = model.stack.merge(model.coefficients)
    avg = encoder_of(MERGE_METHODS.get("model-avg").build(ctx))
    assert all(torch.allclose(merged[k], avg[k], atol=1e-6) for k in ENCODER_KEYS)
    x, mask = pad_bags(list(bags(2).values()))
    out = model(x, mask)
    assert torch.allclose(out.aux_loss, 0.1 * torch.logsumexp(model.coefficients, 0) ** 2)
    out.logits.sum().backward()
    assert model.coefficients.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(5,), (6, 5)], ids=["global", "per-bag"])
@pytest.mark.parametrize("top_k", [None, 2])
def test_adamerging_regulariser_gradient_in_closed_form_equals_autograd_of_the_formula(
    shape: tuple[int, ...], top_k: int | None
) -> None:
    """``regularise_coefficients`` (closed-form backward) against autograd through the formula
    as the reference writes it, in float64: ``gamma`` times the mean over rows of ``LSE(c)^2``
    plus the mean of the top k, for global coefficients ``[N]`` and a hypernetwork's ``[B, N]``."""
    g = torch.Generator().manual_seed(11)
    c = (torch.randn(shape, generator=g) * 2).requires_grad_()
    loss = regularise_coefficients(c, top_k, 0.3)
    loss.backward()
    c64 = c.detach().double().requires_grad_()
    rows = torch.logsumexp(c64, dim=-1) ** 2
    if top_k is not None:
        rows = rows + c64.topk(top_k, dim=-1).values.mean(dim=-1)
    expected = 0.3 * rows.mean()
    expected.backward()
    assert loss.dtype == torch.float32 and abs(float(loss.detach()) - float(expected.detach())) < 1e-6
    assert c.grad is not None and torch.allclose(c.grad.double(), c64.grad, atol=1e-6)
    with torch.no_grad():  # the predictions' path: the value without its gradient
        assert torch.equal(regularise_coefficients(c, top_k, 0.3), loss.detach())


def test_ties_adamerging_uses_pairwise_ties_with_the_target() -> None:
    ctx = context(2, options={"density": 0.5})
    method = MERGE_METHODS.get("ties-adamerging")
    pair = ref.unflat(
        ref.ties([ref.flat(ctx.target_vector), ref.flat(ctx.source_vectors[1])], 0.5, "sum"), ctx.theta0
    )
    stacked = method.vectors(ctx)
    own = ref.unflat(2 * ref.trim_kth(ref.flat(ctx.target_vector), 0.5), ctx.theta0)
    assert len(stacked) == 3 and torch.allclose(stacked[0][KEY], own[KEY].float())
    assert torch.allclose(stacked[2][KEY], pair[KEY].float())


def test_roupkt_mixes_the_top_k_experts_by_router_probability() -> None:
    ctx = context(3, top_k=2, options={"balance_weight": 0.5, "z_weight": 0.25})
    model = MERGE_METHODS.get("roupkt").build(ctx).eval()
    assert isinstance(model, RouPKTModel)
    x, mask = pad_bags(list(bags(3).values()))
    with torch.no_grad():
        out = model(x, mask)
        emb = model.embeddings(x, mask)
        target_encoder = {k: ctx.theta0[k] + ctx.target_vector[k] for k in ENCODER_KEYS}
        assert torch.allclose(emb[:, 0], encode(target_encoder, x, mask), atol=1e-6)
        g = model.gate(model.router(x, mask))
        p = torch.softmax(g, dim=1)
        state = model.state_dict()  # expert i as its own layer, experts.<i>.0.weight / .bias

        def expert(i: int, e: torch.Tensor) -> torch.Tensor:
            return torch.relu(e @ state[f"experts.{i}.0.weight"].T + state[f"experts.{i}.0.bias"])

        for b in range(3):
            top = p[b].topk(2)
            mixed = sum(
                top.values[j] * expert(int(top.indices[j]), emb[b, int(top.indices[j])]) for j in range(2)
            )
            assert torch.allclose(out.logits[b], model.pred_head(mixed), atol=1e-5)
        expected_aux = 0.5 * p.max(dim=1).values.mean() + 0.25 * (torch.logsumexp(g, 1) ** 2).mean()
        assert torch.allclose(out.aux_loss, expected_aux, atol=1e-6)
    with pytest.raises(ConfigError, match="only 4 experts"):
        MERGE_METHODS.get("roupkt").check(MergeConfig(options={"top_k": 5}), 3)


def test_roupkt_experts_are_stacked_and_saved_and_loaded_as_separate_layers() -> None:
    """The expert MLPs draw what E ``nn.Linear`` layers built in turn draw, compute what they
    compute, and save and load as their ``ModuleList`` of ``Sequential(Linear, ReLU)`` (keys,
    order, values, each tensor its own storage, the same safetensors bytes); a layer missing
    from a file is named; the update decays the weights only."""
    torch.manual_seed(7)
    experts = ExpertMLPs(4, 8)
    torch.manual_seed(7)
    layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(4))
    state, expected = experts.state_dict(), layers.state_dict()
    assert list(state) == list(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert all(v.untyped_storage().nbytes() == v.nbytes for v in state.values())
    assert state_bytes(state) == state_bytes(expected)  # the same file, byte for byte
    emb = torch.randn(3, 4, 8)
    with torch.no_grad():
        alone = torch.stack([layers[i](emb[:, i]) for i in range(4)], dim=1)
        assert torch.allclose(experts(emb), alone, atol=1e-6)
    fresh = ExpertMLPs(4, 8)
    fresh.load_state_dict(expected)
    assert torch.equal(fresh.weight, experts.weight) and torch.equal(fresh.bias, experts.bias)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "bias"'):
        ExpertMLPs(4, 8).load_state_dict({k: v for k, v in expected.items() if k != "2.0.bias"})
    decay, rest = (
        g["params"]
        for g in build_optimizer(experts.named_parameters(), lr=1e-4, weight_decay=0.1).param_groups
    )
    assert decay == [experts.weight] and rest == [experts.bias]


def test_frozen_experts_get_no_gradient() -> None:
    model = MERGE_METHODS.get("roupkt").build(context(3, top_k=2)).train()
    x, mask = pad_bags(list(bags(2).values()))
    out = model(x, mask)
    (out.logits.sum() + out.aux_loss).backward()
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert names == {"router", "gate", "experts", "pred_head"}
    assert all(not b.requires_grad for b in model.buffers())


@pytest.mark.parametrize("name", MERGE_METHODS.names())
def test_every_method_fulfils_the_contract(name: str) -> None:
    method = MERGE_METHODS.get(name)
    assert method.name == name and method.description and method.reference
    ctx = context(3, with_data=True, top_k=2 if "top_k" in method.setting_names() else 5)
    torch.manual_seed(0)
    model = method.build(ctx)
    losses = method.train(model, ctx)
    trains = any(p.requires_grad for p in model.parameters())
    assert len(losses) == int(trains) and torch.isfinite(torch.tensor(losses)).all()
    files = method.state_files(model)
    assert set(files) <= set(method.files) and "head.safetensors" in files
    assert set(files["head.safetensors"]) == {"pred_head.weight", "pred_head.bias"}
    saved = {k: v for part in files.values() for k, v in part.items()}
    assert set(saved) == set(model.state_dict())
    torch.manual_seed(1)
    rebuilt = method.build(ctx)
    rebuilt.load_state_dict(saved)
    x, mask = pad_bags(list(bags(2).values()))
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        a, b = model(x, mask), rebuilt(x, mask)
    logits = (a.logits, b.logits) if isinstance(a, ModelOutput) else (a, b)
    assert torch.equal(*logits)


def test_list_methods_and_unknown_names() -> None:
    names = [row["name"] for row in list_methods()]
    assert {
        "steph",
        "model-avg",
        "task-arithmetic",
        "ties",
        "adamerging",
        "ties-adamerging",
        "roupkt",
    } <= set(names)
    with pytest.raises(UnknownNameError, match=r"known merge methods: .*steph"):
        MERGE_METHODS.get("stehp")
