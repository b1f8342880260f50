"""State-dict algebra (steph.task_vectors): identities, TIES steps against loop-based references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steph.errors import ConsistencyError
from steph.task_vectors import (
    add,
    disjoint_merge,
    elect_sign,
    flat_spec,
    flatten,
    mean,
    scale,
    select,
    subtract,
    ties_merge,
    trim,
    unflatten,
    weighted_sum,
)

SHAPES = {"a.weight": (3, 4), "a.bias": (3,), "b.weight": (1, 3)}


def random_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, generator=g, dtype=torch.float64) for k, s in SHAPES.items()}


seeds = st.integers(0, 10_000)


@settings(max_examples=30, deadline=None)
@given(seeds, seeds)
def test_add_inverts_subtract(s1: int, s2: int) -> None:
    a, b = random_state(s1), random_state(s2)
    back = add(subtract(a, b), b)
    assert all(torch.allclose(back[k], a[k], atol=1e-12) for k in a)


@settings(max_examples=30, deadline=None)
@given(st.lists(seeds, min_size=1, max_size=4), st.lists(st.floats(-3, 3), min_size=4, max_size=4))
def test_weighted_sum_matches_elementwise_loop(state_seeds: list[int], weights: list[float]) -> None:
    states = [random_state(s) for s in state_seeds]
    w = weights[: len(states)]
    out = weighted_sum(states, w)
    for key, shape in SHAPES.items():
        expected = np.zeros(shape)
        for state, wj in zip(states, w, strict=True):
            expected += wj * state[key].numpy()
        np.testing.assert_allclose(out[key].numpy(), expected, atol=1e-12)


def test_mean_and_scale() -> None:
    a, b = random_state(1), random_state(2)
    m = mean([a, b])
    assert torch.allclose(m["a.weight"], (a["a.weight"] + b["a.weight"]) / 2)
    assert torch.allclose(scale(a, -2.0)["a.bias"], -2 * a["a.bias"])


def test_weighted_sum_keeps_gradients() -> None:
    w = torch.tensor([0.5, 2.0], requires_grad=True)
    a, b = random_state(1), random_state(2)
    weighted_sum([a, b], w)["a.bias"].sum().backward()
    assert torch.allclose(w.grad, torch.stack([a["a.bias"].sum(), b["a.bias"].sum()]).float())


@settings(max_examples=20, deadline=None)
@given(seeds)
def test_flatten_unflatten_roundtrip_and_batched_views(seed: int) -> None:
    state = random_state(seed)
    keys = ["b.weight", "a.weight", "a.bias"]
    spec = flat_spec(state, keys)
    flat = flatten(state, keys)
    assert flat.shape == (sum(int(np.prod(s)) for s in SHAPES.values()),)
    assert flat[:3].tolist() == state["b.weight"].reshape(-1).tolist()
    back = unflatten(flat, spec)
    assert list(back) == keys and all(torch.equal(back[k], state[k]) for k in keys)
    batched = unflatten(torch.stack([flat, 2 * flat]), spec)
    assert batched["a.weight"].shape == (2, 3, 4) and torch.equal(
        batched["a.weight"][1], 2 * state["a.weight"]
    )


def test_mismatched_state_dicts_are_refused() -> None:
    a, b = random_state(1), random_state(2)
    b["extra"] = torch.zeros(1)
    with pytest.raises(ConsistencyError, match="different parameter names"):
        subtract(a, b)
    c = random_state(3)
    c["a.bias"] = torch.zeros(4)
    with pytest.raises(ConsistencyError, match=r"a\.bias"):
        add(a, c)
    with pytest.raises(ConsistencyError, match="lacks"):
        select(a, ["nope"])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 40), st.floats(0.01, 1.0), seeds)
def test_trim_keeps_the_references_kthvalue_count(n: int, p: int, density: float, seed: int) -> None:
    """The one TIES trim: floor(density P) + 1 largest magnitudes (distinct values), all at k = 0."""
    m = torch.randn(n, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = trim(m, density)
    k = p - int(p * density)
    keep = p if k < 1 else p - k + 1
    for row, trimmed in zip(m, out, strict=True):
        kept = trimmed != 0
        assert int(kept.sum()) == keep
        assert torch.equal(trimmed[kept], row[kept])
        if keep < p:  # every kept magnitude >= every dropped one
            assert row[kept].abs().min() >= row[~kept].abs().max()


def test_there_is_one_ties() -> None:
    """The ``ties`` / ``ties-adamerging`` methods use steph.task_vectors' TIES (issue: two trims)."""
    import steph.merging.baselines as baselines
    import steph.merging.ties as pairwise

    assert not hasattr(pairwise, "trim_kth") and not hasattr(pairwise, "ties")
    assert baselines.ties_merge is ties_merge and pairwise.ties_merge is ties_merge


def _elect_reference(m: np.ndarray) -> np.ndarray:
    sign = np.sign(m.sum(axis=0))
    majority = np.sign(sign.sum())
    return np.where(sign == 0, majority, sign)


def _disjoint_reference(m: np.ndarray, sign: np.ndarray, reduce: str) -> np.ndarray:
    out = np.zeros(m.shape[1])
    for col in range(m.shape[1]):
        agree = [v for v in m[:, col] if v != 0 and np.sign(v) == sign[col]]
        if agree:
            out[col] = sum(agree) if reduce == "sum" else sum(agree) / len(agree)
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 30), seeds, st.sampled_from(["mean", "sum"]))
def test_elect_and_disjoint_merge_match_loops(n: int, p: int, seed: int, reduce: str) -> None:
    rng = np.random.default_rng(seed)
    m = rng.integers(-2, 3, size=(n, p)).astype(np.float64)  # many zeros and exact ties
    sign = elect_sign(torch.from_numpy(m))
    np.testing.assert_array_equal(sign.numpy(), _elect_reference(m))
    merged = disjoint_merge(torch.from_numpy(m), sign, reduce=reduce)  # type: ignore[arg-type]
    np.testing.assert_allclose(merged.numpy(), _disjoint_reference(m, sign.numpy(), reduce))


def test_ties_merge_of_one_vector_at_full_density_is_identity() -> None:
    a = random_state(4)
    out = ties_merge([a], density=1.0)
    assert all(torch.allclose(out[k], a[k]) for k in a)


def test_ties_merge_trims_over_the_joint_vector() -> None:
    a = {"x": torch.tensor([10.0, -1.0]), "y": torch.tensor([0.5, 3.0])}
    b = {"x": torch.tensor([-2.0, -1.0]), "y": torch.tensor([0.1, 4.0])}
    out = ties_merge([a, b], density=0.5, reduce="sum", keys=["x", "y"])
    # floor(0.5 * 4) + 1 = 3 kept of the joint 4: a keeps 10, -1, 3; b keeps -2, -1, 4;
    # signs: x0 + (10 - 2), x1 -, y1 +; y0 has no kept entry
    assert out["x"].tolist() == [10.0, -2.0] and out["y"].tolist() == [0.0, 7.0]
