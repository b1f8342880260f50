"""The reference's remaining merge options (issue #27 item 4), each against a numpy computation of
what the reference's classes do with it (``model/merged_model.py``, ``merged_model_mixup.py``,
``utils/func_config.py``, ``runner/sa_taskari_handler.py`` at liupei101/STEPH@3f210c7).

- ``task_ari_param_to_merge`` (``mil_encoder`` / ``all`` / ``pred_head``) -> ``merged`` of the
  fixed merges: the listed tensors are ``null + sum_j w_j tau_j``, every other one the target's;
- ``task_ari_clamp_weights`` -> ``clamp_weights``: ``merge_models`` clamps the weights to [0, 1]
  before merging, the regularisers see them unclamped;
- ``task_ari_src_init_coef`` -> ``coefficients``: the fixed weights of ``FIX``, the initial ones of
  ``ADA``; ``task_ari_initial_lambda_t`` -> STEPH's ``fixed_lambdas`` (``compute_mix_weights:
  fix``: ``r = (1 - max(eps, l)) / max(eps, l)``, ``lambda = 1 / (1 + r)``);
- ``task_ari_src_exlude_target: False`` -> STEPH's ``target_as_source``: the target's same-fold
  vector is one more source, mixed with itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _merge_helpers import bags, context

from steph.errors import ConfigError
from steph.merging import MERGE_METHODS
from steph.models.abmil import ENCODER_KEYS, encode
from steph.training.batching import pad_bags

HEAD = ("pred_head.weight", "pred_head.bias")
ALL = (*ENCODER_KEYS, *HEAD)
EPS = 1e-9  # merged_model_mixup.EPS


def np_state(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.double().numpy() for k, v in state.items()}


def reference_fixed(ctx, weights: list[float], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``MergedModel`` (FIX, base null): ``null + sum_j w_j tau_j`` on ``names``, the target's
    tensors elsewhere (``merge_models``: 'fill the parameters NOT in the merging list')."""
    theta0, target = np_state(ctx.theta0), np_state(ctx.target_vector)
    pool = [target, *(np_state(v) for v in ctx.source_vectors)]
    out = {}
    for key in ALL:
        if key in names:
            out[key] = theta0[key] + sum(w * tv[key] for w, tv in zip(weights, pool, strict=True))
        else:
            out[key] = theta0[key] + target[key]
    return out


def model_state(model) -> dict[str, np.ndarray]:
    enc = np_state(model.encoder.as_dict())
    head = np_state({k: model.state_dict()[k] for k in HEAD})
    return {**enc, **head}


# -- task_ari_param_to_merge ------------------------------------------------------------------------
@pytest.mark.parametrize(("merged", "names"), [("encoder", ENCODER_KEYS), ("all", ALL), ("pred_head", HEAD)])
def test_param_to_merge_for_the_fixed_merges(merged: str, names: tuple[str, ...]) -> None:
    coefficients = [0.5, 0.2, -0.1, 0.3]
    ctx = context(3, options={"merged": merged, "coefficients": coefficients})
    model = MERGE_METHODS.get("task-arithmetic").build(ctx)
    expected = reference_fixed(ctx, coefficients, names)
    got = model_state(model)
    for key in ALL:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-6, err_msg=key)
    avg = MERGE_METHODS.get("model-avg").build(context(3, options={"merged": merged}))
    expected = reference_fixed(ctx, [0.25] * 4, names)  # FIX-avg: 1/N each
    for key in ALL:
        np.testing.assert_allclose(model_state(avg)[key], expected[key], rtol=1e-6, atol=1e-6)


def test_param_to_merge_names_its_folder_and_refuses_a_trained_head() -> None:
    method = MERGE_METHODS.get("ties")
    assert method.run_name(context(3, options={"merged": "all"}).config) == "ties-merged-all"
    with pytest.raises(ConfigError, match="head: trained replaces"):
        method.check(context(3, options={"merged": "all", "head": "trained"}).config, 3)


# -- task_ari_src_init_coef -------------------------------------------------------------------------
def test_init_coef_of_the_fixed_and_adamerging_merges() -> None:
    ctx = context(3, with_data=True, options={"coefficients": [0.4, 0.3, 0.2, 0.1]})
    ada = MERGE_METHODS.get("adamerging")
    model = ada.build(ctx)
    np.testing.assert_array_equal(model.coefficients.detach().numpy(), np.float32([0.4, 0.3, 0.2, 0.1]))
    assert ada.run_name(ctx.config) == "adamerging-init-0.4-0.3-0.2-0.1"
    with pytest.raises(ConfigError, match="3 coefficients for 4 task vectors"):
        ada.check(context(3, options={"coefficients": [1.0, 1.0, 1.0]}).config, 3)
    with pytest.raises(ConfigError, match="hypernet"):
        ada.check(context(3, options={"coefficients": [1.0] * 4, "hypernet": True}).config, 3)
    with pytest.raises(ConfigError, match="scale has no effect"):
        MERGE_METHODS.get("task-arithmetic").check(
            context(3, options={"coefficients": [1.0] * 4, "scale": 0.5}).config, 3
        )


# -- task_ari_clamp_weights -------------------------------------------------------------------------
def test_clamp_weights_of_adamerging() -> None:
    c = [1.6, -0.4, 0.3, 0.8]
    ctx = context(3, gamma=0.2, options={"coefficients": c, "clamp_weights": True})
    model = MERGE_METHODS.get("adamerging").build(ctx).eval()
    x, mask = pad_bags(list(bags(3).values()))
    theta0, pool = np_state(ctx.theta0), [np_state(ctx.target_vector), *map(np_state, ctx.source_vectors)]
    clipped = np.clip(np.array(c), 0.0, 1.0)
    params = {
        k: theta0[k] + sum(w * tv[k] for w, tv in zip(clipped, pool, strict=True)) for k in ENCODER_KEYS
    }
    z = encode({k: torch.from_numpy(v).float() for k, v in params.items()}, x, mask)
    with torch.no_grad():
        out = model(x, mask)
        expected = z @ model.pred_head.weight.T + model.pred_head.bias
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    z_loss = np.log(np.exp(np.array(c)).sum()) ** 2  # calc_merge_weight_loss on the unclamped weight
    assert float(out.aux_loss) == pytest.approx(0.2 * z_loss, rel=1e-6)
    assert MERGE_METHODS.get("adamerging").run_name(ctx.config).endswith("-clamp")


def reference_steph(ctx, w: np.ndarray, lam: np.ndarray, top_k: int, clamp: bool, with_target: bool):
    """``MixVecMergedModel.merge_models`` for one bag: base null, the top-k of the (clamped)
    weights, ``w_i tau_si + w_i lambda_i (tau_t - tau_si)``."""
    theta0, target = np_state(ctx.theta0), np_state(ctx.target_vector)
    pool = [np_state(v) for v in ctx.source_vectors]
    if with_target:
        pool = [target, *pool]
    merge_w = np.clip(w, 0.0, 1.0) if clamp else w
    chosen = np.argsort(-merge_w, kind="stable")[:top_k]
    out = {k: theta0[k].copy() for k in ENCODER_KEYS}
    for i in chosen:
        for k in ENCODER_KEYS:
            out[k] += merge_w[i] * pool[i][k] + merge_w[i] * lam[i] * (target[k] - pool[i][k])
    return out


def steph_logits(model, params: dict[str, np.ndarray], x, mask) -> torch.Tensor:
    z = encode({k: torch.from_numpy(v).float() for k, v in params.items()}, x, mask)
    return z @ model.pred_head.weight.T + model.pred_head.bias


# -- task_ari_initial_lambda_t + task_ari_clamp_weights for STEPH ----------------------------------
def test_steph_per_source_fixed_lambdas_and_clamped_weights() -> None:
    lambdas = [0.2, 0.5, 0.7, 0.1]
    ctx = context(
        4, top_k=2, gamma=0.3, mix="fixed", weights="global",
        options={"fixed_lambdas": lambdas, "clamp_weights": True},
    )  # fmt: skip
    model = MERGE_METHODS.get("steph").build(ctx).eval()
    w = np.array([1.7, 0.4, 1.2, 0.9])  # two weights above 1, distinct top-2 (0 and 2)
    model.global_w.data = torch.tensor(w, dtype=torch.float32)
    x, mask = pad_bags(list(bags(1).values()))
    r = [(1 - max(EPS, v)) / max(EPS, v) for v in lambdas]  # compute_mix_weights: fix
    lam = 1.0 / (1.0 + np.array(r))
    expected = steph_logits(model, reference_steph(ctx, w, lam, 2, clamp=True, with_target=False), x, mask)
    with torch.no_grad():
        out = model(x, mask)
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    # the regulariser on the unclamped weights: z-loss + mean of the top-k (no beta: lambda fixed)
    reg = np.log(np.exp(w).sum()) ** 2 + np.sort(w)[-2:].mean()
    assert float(out.aux_loss) == pytest.approx(0.3 * reg, rel=1e-5)
    np.testing.assert_allclose(out.extras["lambda"][0].numpy(), lam, rtol=1e-6)
    method = MERGE_METHODS.get("steph")
    assert method.run_name(ctx.config) == "steph-fixed-lambdas-0.2-0.5-0.7-0.1-global-w-top2-gamma0.3-clamp"
    with pytest.raises(ConfigError, match="one lambda per mixture"):
        method.check(context(4, top_k=2, mix="fixed", options={"fixed_lambdas": [0.5]}).config, 4)


# -- task_ari_src_exlude_target: False ----------------------------------------------------------------
def test_steph_with_the_target_kept_among_the_sources() -> None:
    lambdas = [0.6, 0.3, 0.8, 0.4]  # the target's own mixture first
    ctx = context(
        3, top_k=2, mix="fixed", weights="global",
        options={"fixed_lambdas": lambdas, "target_as_source": True},
    )  # fmt: skip
    method = MERGE_METHODS.get("steph")
    model = method.build(ctx).eval()
    assert model.n_sources == 4 and model.global_w.shape == (4,)
    w = np.array([0.9, 0.2, 0.7, 0.1])  # the target's mixture is selected
    model.global_w.data = torch.tensor(w, dtype=torch.float32)
    x, mask = pad_bags(list(bags(2).values()))
    expected = steph_logits(
        model, reference_steph(ctx, w, np.array(lambdas), 2, clamp=False, with_target=True), x, mask
    )
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask).logits, expected, rtol=1e-5, atol=1e-5)
    assert method.run_name(ctx.config).endswith("-target-as-source")
    method.check(ctx.config, 3)  # top-k may reach m + 1
    with pytest.raises(ConfigError, match="the target with target_as_source"):
        method.check(context(3, top_k=5, options={"target_as_source": True}).config, 3)
    table = method.tables(model, ["P0"], {k: v for k, v in model(x[:1], mask[:1]).extras.items()}, ctx)
    assert [row[1] for row in table["coefficients.csv"][1]] == ["BRCA", "BLCA", "LUNG", "KIPAN"]
