"""The methods and variants of issue 17, each against its defining property: Iso-C, Iso-CTS,
Representation Surgery, the hypernetwork on other merges, STEPH's fnn head, the output layers
and ``base: target``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _merge_helpers import bags, context

from steph.config import MergeConfig
from steph.errors import ConfigError
from steph.merging import MERGE_METHODS
from steph.merging.adamerging import AdaMergingModel
from steph.merging.iso import common_size, iso_cts, iso_pairwise
from steph.merging.surgery import SurgeryModel
from steph.models.abmil import ENCODER_KEYS, encode
from steph.training.batching import pad_bags

MATRICES = [k for k in ENCODER_KEYS if k.endswith("weight")]
BIASES = [k for k in ENCODER_KEYS if k.endswith("bias")]


def _vectors(ctx) -> list[dict[str, torch.Tensor]]:
    return [ctx.target_vector, *ctx.source_vectors]


# -- Iso-C ------------------------------------------------------------------------------------------
def test_iso_c_singular_values_all_equal_their_mean() -> None:
    ctx = context(3)
    model = MERGE_METHODS.get("iso-c").build(ctx)
    merged = model.encoder.as_dict()
    for key in MATRICES:
        delta = (merged[key] - ctx.theta0[key]).double().numpy()
        total = sum(v[key].double().numpy() for v in _vectors(ctx))
        s_total = np.linalg.svd(total, compute_uv=False)
        s = np.linalg.svd(delta, compute_uv=False)[: len(s_total)]
        assert np.allclose(s, s_total.mean(), rtol=1e-4), key
        # same singular subspaces as the sum (Iso-C only flattens the spectrum)
        u, _, _ = np.linalg.svd(total, full_matrices=False)
        assert np.allclose(u @ u.T @ delta, delta, atol=1e-5)
    for key in BIASES:
        mean = sum(v[key] for v in _vectors(ctx)) / 4
        assert torch.allclose(merged[key] - ctx.theta0[key], mean, atol=1e-6)


def test_iso_c_adamerging_pairs_every_vector_with_the_target() -> None:
    ctx = context(2)
    stacked = MERGE_METHODS.get("iso-c-adamerging").vectors(ctx)
    assert len(stacked) == 3
    for j, v in enumerate(_vectors(ctx)):
        for key in MATRICES:
            pair = (ctx.target_vector[key] + v[key]).double().numpy()
            s_pair = np.linalg.svd(pair, compute_uv=False)
            s = np.linalg.svd(stacked[j][key].double().numpy(), compute_uv=False)[: len(s_pair)]
            assert np.allclose(s, s_pair.mean(), rtol=1e-4)
        for key in BIASES:
            assert torch.allclose(stacked[j][key], (ctx.target_vector[key] + v[key]) / 2)


# -- Iso-CTS ----------------------------------------------------------------------------------------
def _ortho_basis(a: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    return u[:, s > tol * s.max()]


def test_iso_cts_spans_the_common_and_task_specific_subspaces() -> None:
    g = torch.Generator().manual_seed(3)
    tasks = [torch.randn(12, 20, generator=g, dtype=torch.float64) for _ in range(3)]
    merged = iso_cts(tasks, 0.5).numpy()
    total = sum(t.numpy() for t in tasks)
    r = 12
    k = common_size(r, 3, 0.5)  # int(6) -> 12 - 3 * round(6 / 3) = 6
    n = (r - k) // 3
    assert (k, n) == (6, 2)
    u, _, _ = np.linalg.svd(total, full_matrices=False)
    u_k = u[:, :k]
    col = _ortho_basis(merged)
    assert col.shape[1] == r
    project = col @ col.T
    # the common subspace: the top-k left singular vectors of the sum
    assert np.allclose(project @ u_k, u_k, atol=1e-6)
    # each task's own top-n directions outside the common subspace
    for t in tasks:
        rest = t.numpy() - u_k @ u_k.T @ t.numpy()
        u_t = np.linalg.svd(rest, full_matrices=False)[0][:, :n]
        assert np.allclose(project @ u_t, u_t, atol=1e-6)
    # a flat spectrum
    s = np.linalg.svd(merged, compute_uv=False)
    assert np.allclose(s, s.mean(), rtol=1e-6)


def test_iso_cts_pairwise_writes_every_result_into_its_own_vector() -> None:
    """The reference's loop-variable clash wrote every pair into task vector 1; here entry j is
    Iso-CTS(tau_t, tau_j) and the entries differ."""
    ctx = context(3)
    stacked = MERGE_METHODS.get("iso-cts-adamerging").vectors(ctx)
    for j, v in enumerate(_vectors(ctx)):
        for key in MATRICES:
            expected = iso_cts([ctx.target_vector[key], v[key]], 0.8)
            assert torch.allclose(stacked[j][key], expected, atol=1e-6)
    assert not torch.allclose(stacked[1][MATRICES[0]], stacked[2][MATRICES[0]])
    assert len(iso_pairwise(ctx.target_vector, _vectors(ctx), ENCODER_KEYS, "iso-cts")) == 4


def test_iso_cts_data_free_has_a_flat_spectrum() -> None:
    ctx = context(3)
    merged = MERGE_METHODS.get("iso-cts").build(ctx).encoder.as_dict()
    for key in MATRICES:
        delta = (merged[key] - ctx.theta0[key]).double().numpy()
        s = np.linalg.svd(delta, compute_uv=False)[: min(delta.shape)]
        assert np.allclose(s, s.mean(), rtol=1e-4)
    with pytest.raises(ConfigError, match="common_fraction"):
        MERGE_METHODS.get("iso-cts").check(MergeConfig(options={"common_fraction": 1.5}), 3)


# -- Representation Surgery -----------------------------------------------------------------------------
def test_surgery_objective_is_the_l1_alignment_with_the_target_representation() -> None:
    ctx = context(3, gamma=0.1, options={"rank": 4, "align_weight": 2.0})
    model = MERGE_METHODS.get("surgery-adamerging").build(ctx)
    assert isinstance(model, SurgeryModel)
    torch.manual_seed(0)
    with torch.no_grad():
        model.surgery.up.weight.normal_()
    model.eval()
    x, mask = pad_bags(list(bags(3).values()))
    out = model(x, mask)
    with torch.no_grad():
        merged = model.stack.merge(model.coefficients)
        z = encode(merged, x, mask).double().numpy()
        target = {k: ctx.theta0[k] + ctx.target_vector[k] for k in ENCODER_KEYS}
        z_t = encode(target, x, mask).double().numpy()
        w_d, w_u = model.surgery.down.weight.double().numpy(), model.surgery.up.weight.double().numpy()
        z_hat = z - np.maximum(z @ w_d.T, 0) @ w_u.T
        c = model.coefficients.double().numpy()
        align = np.abs(z_hat - z_t).mean()
        expected = 0.1 * np.log(np.exp(c).sum()) ** 2 + 2.0 * align
        head = model.pred_head.weight.double().numpy(), model.pred_head.bias.double().numpy()
    assert float(out.aux_loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert np.allclose(out.logits.detach().double().numpy(), z_hat @ head[0].T + head[1], atol=1e-5)


def test_surgery_starts_at_the_merged_representation_and_learns_to_align() -> None:
    ctx = context(3, options={"rank": 4})
    model = MERGE_METHODS.get("surgery-adamerging").build(ctx).eval()
    x, mask = pad_bags(list(bags(4).values()))
    z = torch.randn(4, 8)
    assert torch.equal(model.surgery(z), z)  # W_u starts at 0
    opt = torch.optim.Adam(model.surgery.parameters(), lr=0.05)
    with torch.no_grad():
        z_t = model.target_embedding(x, mask)
        z_m = model.represent(x, mask, model.coefficients)
    first = None
    for _ in range(60):
        loss = (model.surgery(z_m) - z_t).abs().mean()
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.7 * first


# -- the hypernetwork on other merges (ADA-dynamic) ----------------------------------------------------
@pytest.mark.parametrize("name", ["adamerging", "ties-adamerging", "iso-c-adamerging", "surgery-adamerging"])
@pytest.mark.parametrize("output", ["relu", "sigmoid", "softplus"])
def test_per_patient_weights_equal_the_hypernetwork_head(name: str, output: str) -> None:
    ctx = context(3, options={"hypernet": True, "output": output})
    method = MERGE_METHODS.get(name)
    assert method.run_name(ctx.config) == name + "-hypernet" + (
        "" if output == "relu" else f"-output-{output}"
    )
    model = method.build(ctx).eval()
    assert isinstance(model, AdaMergingModel) and model.coefficients is None
    data = list(bags(3).values())
    x, mask = pad_bags(data)
    with torch.no_grad():
        out = model(x, mask)
        net = model.hypernet
        for b, bag in enumerate(data):
            h = torch.relu(bag @ net.embed.weight.T + net.embed.bias).mean(dim=0)
            logits = net.head("agg", h)
            fn = {"relu": torch.relu, "sigmoid": torch.sigmoid, "softplus": torch.nn.functional.softplus}[
                output
            ]
            assert torch.allclose(out.extras["coefficients"][b], fn(logits), atol=1e-6)
            # the bag's encoder is the base plus its own weighted task vectors
            c = out.extras["coefficients"][b]
            params = {
                k: ctx.theta0[k] + sum(c[j] * v[k] for j, v in enumerate(method.vectors(ctx)))
                for k in ENCODER_KEYS
            }
            z = encode(params, bag.unsqueeze(0))
            if isinstance(model, SurgeryModel):
                z = model.surgery(z)
            assert torch.allclose(out.logits[b], model.pred_head(z)[0], atol=1e-5)
    if output == "relu":
        assert (out.extras["coefficients"] >= 0).all()
    elif output == "sigmoid":
        assert ((out.extras["coefficients"] > 0) & (out.extras["coefficients"] < 1)).all()


def test_hypernet_regulariser_averages_over_bags() -> None:
    ctx = context(3, gamma=0.2, options={"hypernet": True, "top_k_loss": 2})
    model = MERGE_METHODS.get("adamerging").build(ctx).eval()
    x, mask = pad_bags(list(bags(4).values()))
    out = model(x, mask)
    c = out.extras["coefficients"].double().numpy()
    per_bag = np.log(np.exp(c).sum(axis=1)) ** 2 + np.sort(c, axis=1)[:, ::-1][:, :2].mean(axis=1)
    assert float(out.aux_loss.detach()) == pytest.approx(0.2 * per_bag.mean(), rel=1e-5)


def test_output_layer_needs_the_hypernetwork() -> None:
    with pytest.raises(ConfigError, match="hypernet"):
        MERGE_METHODS.get("adamerging").check(MergeConfig(options={"output": "sigmoid"}), 3)
    with pytest.raises(ConfigError, match="expected relu\\|sigmoid\\|softplus"):
        MERGE_METHODS.get("steph").check(MergeConfig(options={"output": "tanh"}), 5)


# -- STEPH: fnn mix head, output layers, base: target ---------------------------------------------------
def test_fnn_mix_head_has_its_own_patch_embedding() -> None:
    ctx = context(3, top_k=2, mix="fnn")
    method = MERGE_METHODS.get("steph")
    assert method.run_name(ctx.config) == "steph-fnn-lambda-top2"
    model = method.build(ctx).eval()
    net = model.hypernet
    assert net.mix_embed is not None
    data = list(bags(2).values())
    x, mask = pad_bags(data)
    with torch.no_grad():
        out = model(x, mask)
        for b, bag in enumerate(data):
            h_mix = torch.relu(bag @ net.mix_embed.weight.T + net.mix_embed.bias).mean(dim=0)
            lam = 1 / (1 + torch.relu(net.head("mix", h_mix)))
            assert torch.allclose(out.extras["lambda"][b], lam, atol=1e-6)
        net.embed.weight.zero_()  # the aggregation embedding does not feed lambda
        assert torch.allclose(model(x, mask).extras["lambda"], out.extras["lambda"])


@pytest.mark.parametrize("output", ["sigmoid", "softplus"])
def test_steph_output_layer_of_w(output: str) -> None:
    ctx = context(3, top_k=2, options={"output": output})
    model = MERGE_METHODS.get("steph").build(ctx).eval()
    x, mask = pad_bags(list(bags(2).values()))
    with torch.no_grad():
        h = model.hypernet.embed_bags(x, mask)
        fn = torch.sigmoid if output == "sigmoid" else torch.nn.functional.softplus
        assert torch.allclose(model(x, mask).extras["w"], fn(model.hypernet.head("agg", h)), atol=1e-6)


def test_base_target_merges_onto_the_target_parameters() -> None:
    ctx = context(3, top_k=2, mix="fixed", fixed_lambda=0.0, options={"base": "target"})
    method = MERGE_METHODS.get("steph")
    assert method.run_name(ctx.config) == "steph-fixed-lambda0-top2-base-target"
    model = method.build(ctx).eval()
    zero = torch.zeros(1, 4)
    merged = model.stack.merge(zero)
    for key in ENCODER_KEYS:
        assert torch.allclose(merged[key][0], ctx.theta0[key] + ctx.target_vector[key], atol=1e-6)
    avg = MERGE_METHODS.get("model-avg").build(context(3, options={"base": "target"})).encoder.as_dict()
    for key in ENCODER_KEYS:
        mean = sum(v[key] for v in _vectors(ctx)) / 4
        assert torch.allclose(avg[key], ctx.theta0[key] + ctx.target_vector[key] + mean, atol=1e-6)
