"""iso-cts-adamerging's target entry, Iso-CTS(tau_t, tau_t) (issue #27 item 1), with trained task
vectors: defined by the part of the stacked construction that does not depend on the SVD's
arbitrary completion (steph.merging.iso.iso_cts_copies), stable under a 1e-7 change of tau_t."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steph.config import ModelConfig
from steph.merging.iso import common_size, is_matrix, iso_cts, iso_cts_copies, iso_pairwise
from steph.models.abmil import ENCODER_KEYS
from steph.synthetic import standard_spec
from steph.synthetic.cohort import FeatureSpec
from steph.synthetic.vectors import train_task_vectors
from steph.training.loop import FitSettings

FRACTION = 0.8


@pytest.fixture(scope="module")
def trained() -> dict[str, dict[str, torch.Tensor]]:
    """Trained task vectors at 48x64 (feat_proj) / 32x48 (attention): two synthetic cancers."""
    spec = standard_spec(
        cancers=("BRCA", "BLCA"),
        target="BRCA",
        target_patients=24,
        source_patients=(24, 24),
        features=FeatureSpec(dim=64, patches=(16, 32)),
    )
    _, vectors = train_task_vectors(
        spec, ModelConfig(dim_emb=48, dim_attn=32), FitSettings(epochs=3, batch_size=8, lr=2e-4)
    )
    return vectors


def matrices(vector: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in ENCODER_KEYS if is_matrix(k, vector[k]) and min(vector[k].shape) > 1]


def test_the_target_entry_is_stable_under_a_1e_7_change_of_tau_t(trained) -> None:
    tau_t, tau_s = trained["BRCA"], trained["BLCA"]
    entry = iso_pairwise(tau_t, [tau_t, tau_s], ENCODER_KEYS, "iso-cts")[0]
    g = torch.Generator().manual_seed(0)
    for draw in range(3):
        moved = {k: v + 1e-7 * v.abs().max() * torch.randn(v.shape, generator=g) for k, v in tau_t.items()}
        again = iso_pairwise(moved, [moved, tau_s], ENCODER_KEYS, "iso-cts")[0]
        for key in matrices(tau_t):
            change = float((again[key] - entry[key]).abs().max() / entry[key].abs().max())
            assert change < 1e-4, (draw, key, change)


def test_the_target_entry_is_the_same_in_float32_and_float64(trained) -> None:
    for key in matrices(trained["BRCA"]):
        delta = trained["BRCA"][key]
        single = iso_cts([delta.float(), delta.float()], FRACTION).double()
        double = iso_cts([delta.double(), delta.double()], FRACTION)
        assert float((single - double).abs().max() / double.abs().max()) < 1e-5, key


def numpy_stacked_without_null(delta: np.ndarray, copies: int, fraction: float) -> np.ndarray:
    """The paper's stacked Iso-CTS (numpy), orthogonalising ``X -> P Q^T`` over the non-null
    singular directions of the stack only: the part every SVD completion shares."""
    total = copies * delta
    u, s, vh = np.linalg.svd(total, full_matrices=False)
    r = s.size
    k = r - round((r - int(r * fraction)) / copies) * copies
    n = (r - k) // copies
    rest = delta - u[:, :k] @ (u[:, :k].T @ delta)
    ur, sr, vr = np.linalg.svd(rest, full_matrices=False)
    big_u = np.concatenate([ur[:, :n]] * copies + [u[:, :k]], axis=1)
    big_s = np.concatenate([sr[:n]] * copies + [s[:k]])
    big_v = np.concatenate([vr[:n]] * copies + [vh[:k]], axis=0)

    def polar(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p, sv, q = np.linalg.svd(x, full_matrices=False)
        keep = sv > 1e-8 * sv.max()
        return p[:, keep], q[keep]

    pu, qu = polar(big_u)
    pv, qv = polar(big_v.T)  # big_v = (pv qv)^T
    return big_s.mean() * (pu @ qu) @ (pv @ qv).T


@pytest.mark.parametrize("copies", [2, 3])
def test_the_entry_is_the_non_null_part_of_the_stacked_construction(trained, copies: int) -> None:
    for key in matrices(trained["BRCA"]):
        delta = trained["BRCA"][key].double()
        expected = numpy_stacked_without_null(delta.numpy(), copies, FRACTION)
        np.testing.assert_allclose(iso_cts_copies(delta, copies, FRACTION).numpy(), expected, atol=1e-12)
        r = min(delta.shape)
        assert common_size(r, copies, FRACTION) <= r


def test_one_copy_is_iso_c_and_distinct_tasks_are_unchanged(trained) -> None:
    delta = trained["BRCA"]["feat_proj.0.weight"].double()
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    torch.testing.assert_close(iso_cts_copies(delta, 1), s.mean() * (u @ vh))
    other = trained["BLCA"]["feat_proj.0.weight"].double()
    from steph.merging.iso import iso_cts_stacked

    assert torch.equal(iso_cts([delta, other]), iso_cts_stacked([delta, other]))
