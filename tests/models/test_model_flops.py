"""The analytic FLOPs of steph.models.flops against PyTorch's FLOP counter on a real forward and backward."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from steph.config import ModelConfig
from steph.models import flops
from steph.models.abmil import create_abmil
from steph.synthetic.models import tiny_model
from steph.training import memo
from steph.training.loop import ModelOutput

W = flops.Widths(dim_in=24, dim_emb=16, dim_attn=12, time_bins=8)
MODEL = ModelConfig(dim_emb=W.dim_emb, dim_attn=W.dim_attn, time_bins=W.time_bins)
SOURCES = ("BLCA", "LUNG", "KIPAN")
K = 37


def merged(name: str, **options: object) -> torch.nn.Module:
    return tiny_model(name, W.dim_in, MODEL, sources=SOURCES, options=options)


def _mv_flops(mat_shape: tuple[int, int], *_args: object, **_kwargs: object) -> int:
    return 2 * mat_shape[0] * mat_shape[1]


def _addmv_flops(_self_shape: object, mat_shape: tuple[int, int], *_args: object, **_kwargs: object) -> int:
    return _mv_flops(mat_shape)


MATRIX_VECTOR = {torch.ops.aten.mv: _mv_flops, torch.ops.aten.addmv: _addmv_flops}
"""Matrix-vector products, which PyTorch's counter leaves out (AdaMerging's one merged encoder
is ``theta0 + vectors^T c``, an ``addmv``; its backward an ``mv``), counted as the products they are."""


def counted(model: torch.nn.Module, train: bool) -> int:
    x = torch.randn(1, K, W.dim_in)
    model.eval()
    with FlopCounterMode(display=False, custom_mapping=MATRIX_VECTOR) as counter:
        out = model(x)
        logits = out.logits if isinstance(out, ModelOutput) else out
        if train:
            logits.sum().backward()
    return counter.get_total_flops()


def test_abmil() -> None:
    model = create_abmil(W.dim_in, MODEL)
    assert counted(model, False) == flops.abmil_forward(K, W)
    assert counted(model, True) == flops.abmil_step(K, W)


def test_steph() -> None:
    model = merged("steph", top_k=2)
    assert counted(model, False) == flops.steph_forward(K, W, len(SOURCES))
    assert counted(model, True) == flops.steph_step(K, W, len(SOURCES))


def test_adamerging() -> None:
    model = merged("adamerging")
    assert counted(model, False) == flops.adamerging_forward(K, W, len(SOURCES))
    assert counted(model, True) == flops.adamerging_step(K, W, len(SOURCES))


def test_roupkt() -> None:
    model = merged("roupkt", top_k=2)
    assert counted(model, False) == flops.roupkt_forward(K, W, len(SOURCES))
    assert counted(model, True) == flops.roupkt_step(K, W, len(SOURCES))
    assert flops.roupkt_forward(K, W, len(SOURCES), experts=False) + flops.roupkt_experts(
        K, W, len(SOURCES)
    ) == flops.roupkt_forward(K, W, len(SOURCES))


def test_roupkt_training_step_with_its_experts_stored() -> None:
    """In training the frozen experts run in a bag's first forward only (steph.training.memo)."""
    model = merged("roupkt", top_k=2)
    with memo.bag_memo(3), memo.forward_bags(memo.bag_keys([2])):
        assert counted(model, True) == flops.roupkt_step(K, W, len(SOURCES))  # first: experts run
        assert counted(model, True) == flops.roupkt_step(K, W, len(SOURCES), experts=False)


@pytest.mark.parametrize("dim", [1536, 1024])
def test_reference_width_figures(dim: int) -> None:
    """The figures the benchmarks quote: about 5.5 MFLOP per patch to train ABMIL at D = 1536."""
    w = flops.Widths(dim_in=dim)
    per_patch = flops.abmil_step(1000, w) / 1000
    assert per_patch == pytest.approx(
        3 * 2 * (dim * 512 + 2 * 512 * 384 + 384 + 512) - 2 * dim * 512, rel=1e-3
    )
    if dim == 1536:
        assert 5.0e6 < per_patch < 6.0e6
