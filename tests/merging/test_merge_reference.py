"""The five deviations from the authors' reference (issue 17), each against an independent
computation of what the reference does (numpy, or the reference's formula written out)."""

from __future__ import annotations

import _merge_reference as ref
import numpy as np
import pytest
import torch
from _merge_helpers import bags, context

from steph.merging import MERGE_METHODS
from steph.merging.adamerging import AdaMergingModel
from steph.models.abmil import ENCODER_KEYS, encode
from steph.task_vectors import trim as trim_kth  # the one TIES trim
from steph.training.batching import pad_bags

FIXED = ("model-avg", "task-arithmetic", "ties", "iso-c", "iso-cts")
HEAD = ("pred_head.weight", "pred_head.bias")


# -- 1. fixed-weight merges keep the target's trained head, untrained --------------------------------
@pytest.mark.parametrize("name", FIXED)
def test_fixed_weight_merges_keep_the_target_head_untouched_and_untrained(name: str) -> None:
    method = MERGE_METHODS.get(name)
    ctx = context(3, with_data=True)
    model = method.build(ctx)
    target_head = {k: ctx.theta0[k] + ctx.target_vector[k] for k in HEAD}
    assert not any(p.requires_grad for p in model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert method.train(model, ctx) == []
    for key in HEAD:
        assert torch.equal(model.state_dict()[key], before[key])
        assert torch.allclose(model.state_dict()[key], target_head[key])
    # the prediction is the merged encoder under the target model's own head, written out
    x, mask = pad_bags(list(bags(3).values()))
    model.eval()
    z = encode(model.encoder.as_dict(), x, mask)
    expected = z @ target_head["pred_head.weight"].T + target_head["pred_head.bias"]
    with torch.no_grad():
        assert torch.allclose(model(x, mask), expected, atol=1e-6)


def test_trained_head_is_an_option_and_names_its_folder() -> None:
    method = MERGE_METHODS.get("task-arithmetic")
    ctx = context(3, with_data=True, options={"head": "trained"})
    model = method.build(ctx)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(HEAD)
    assert len(method.train(model, ctx)) == 1
    assert method.run_name(ctx.config) == "task-arithmetic-head-trained"


# -- 2. --no-sparse: the z-loss alone -----------------------------------------------------------------
def test_dense_steph_aggregation_loss_is_the_z_loss_alone() -> None:
    ctx = context(4, sparse=False, gamma=0.3, beta=0.2)
    model = MERGE_METHODS.get("steph").build(ctx).train()
    torch.manual_seed(0)
    x, mask = pad_bags(list(bags(4).values()))
    out = model(x, mask)
    w, lam = out.extras["w"].double().numpy(), out.extras["lambda"].double().numpy()
    z = np.log(np.exp(w).sum(axis=1)) ** 2  # reference calc_merge_weight_loss without top-k
    mix = (lam**2).mean(axis=1)  # calc_mix_weight_loss without top-k
    expected = 0.3 * z.mean() + 0.2 * mix.mean()
    assert float(out.aux_loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_sparse_steph_keeps_the_mean_of_the_selected_weights() -> None:
    ctx = context(4, top_k=2, gamma=0.3, beta=0.2)
    model = MERGE_METHODS.get("steph").build(ctx).train()
    x, mask = pad_bags(list(bags(4).values()))
    out = model(x, mask)
    w, lam = out.extras["w"].double().numpy(), out.extras["lambda"].double().numpy()
    sel = out.extras["selected"].numpy().astype(bool)
    z = np.log(np.exp(w).sum(axis=1)) ** 2 + np.array([w[b, sel[b]].mean() for b in range(4)])
    mix = np.array([(lam[b, sel[b]] ** 2).mean() for b in range(4)])
    assert float(out.aux_loss.detach()) == pytest.approx(0.3 * z.mean() + 0.2 * mix.mean(), rel=1e-5)


# -- 3. ties-adamerging: TIES(tau_t, tau_t) = 2 x trimmed tau_t ------------------------------------
def test_ties_adamerging_pairs_the_target_with_itself() -> None:
    ctx = context(3, options={"density": 0.2})
    stacked = MERGE_METHODS.get("ties-adamerging").vectors(ctx)
    assert len(stacked) == 4
    own = ref.unflat(2 * ref.trim_kth(ref.flat(ctx.target_vector), 0.2), ctx.theta0)
    for key in ENCODER_KEYS:
        assert torch.allclose(stacked[0][key], own[key].float(), atol=1e-7)
    for j, source in enumerate(ctx.source_vectors, start=1):
        pair = ref.ties([ref.flat(ctx.target_vector), ref.flat(source)], 0.2, "sum")
        assert np.allclose(ref.flat(stacked[j]), pair, atol=1e-6)


# -- 4. AdaMerging's regulariser with top-k ----------------------------------------------------------
def test_adamerging_adds_the_mean_of_the_top_k_coefficients() -> None:
    ctx = context(3, gamma=0.1, options={"top_k_loss": 2})
    model = MERGE_METHODS.get("adamerging").build(ctx)
    assert isinstance(model, AdaMergingModel) and model.coefficients is not None
    with torch.no_grad():
        model.coefficients.copy_(torch.tensor([0.4, -0.2, 0.9, 0.1]))
    x, mask = pad_bags(list(bags(2).values()))
    out = model(x, mask)
    c = np.array([0.4, -0.2, 0.9, 0.1])
    density = np.zeros(4)
    density[np.argsort(c)[::-1][:2]] = 1 / 2  # one_hot(topk).float().mean(0), as the reference
    expected = 0.1 * (np.log(np.exp(c).sum()) ** 2 + (c * density).sum())
    assert float(out.aux_loss.detach()) == pytest.approx(expected, rel=1e-6)
    assert MERGE_METHODS.get("adamerging").run_name(ctx.config) == "adamerging-gamma0.1-top-k-loss2"


# -- 5. TIES keeps floor(0.2 P) + 1 entries -------------------------------------------------------------
@pytest.mark.parametrize("size", [10, 37, 500, 1001])
def test_ties_trim_keeps_one_more_than_the_fraction_as_kthvalue(size: int) -> None:
    g = torch.Generator().manual_seed(size)
    matrix = torch.randn(3, size, generator=g, dtype=torch.float64)
    trimmed = trim_kth(matrix, 0.2)
    for row, out in zip(matrix, trimmed, strict=True):
        assert int((out != 0).sum()) == int(0.2 * size) + 1
        assert np.array_equal(out.numpy(), ref.trim_kth(row.numpy(), 0.2))


def test_ties_trim_keeps_every_entry_tied_with_the_threshold() -> None:
    row = torch.tensor([[3.0, -1.0, 1.0, 0.5, 0.2]])
    # P = 5, k = 5 - 1 = 4: the 4th smallest |v| is 1.0, and both entries of magnitude 1 pass >=
    assert trim_kth(row, 0.2).tolist() == [[3.0, -1.0, 1.0, 0.0, 0.0]]
    assert torch.equal(trim_kth(row, 1.0), row)


def test_ties_method_uses_the_reference_trim() -> None:
    ctx = context(3)
    model = MERGE_METHODS.get("ties").build(ctx)
    merged = ref.ties([ref.flat(v) for v in (ctx.target_vector, *ctx.source_vectors)], 0.2, "mean")
    got = ref.flat(model.encoder.as_dict()) - ref.flat(ctx.theta0)
    assert np.allclose(got, merged, atol=1e-6)


def test_doctests_of_the_merge_arithmetic() -> None:
    import doctest

    import steph.merging.paper
    import steph.merging.settings
    import steph.merging.ties

    for module in (steph.merging.ties, steph.merging.paper, steph.merging.settings):
        assert doctest.testmod(module).failed == 0, module.__name__
