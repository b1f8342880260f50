"""train.precision plumbing on CPU: resolution, autocast contexts, fp32 loss and merged weights."""

from __future__ import annotations

import logging

import pytest
import torch
from _merge_helpers import DIM, context

from steph.config.train import TrainConfig
from steph.errors import ConfigError
from steph.merging import MERGE_METHODS
from steph.models.abmil import ABMIL
from steph.training import precision as prec
from steph.training.loop import FitSettings, backward_chunks, load_chunks

CPU = torch.device("cpu")


def test_cpu_always_resolves_to_fp32(caplog: pytest.LogCaptureFixture) -> None:
    assert prec.resolve_precision("auto", CPU) == "fp32"
    assert prec.resolve_precision("fp32", CPU) == "fp32"
    with caplog.at_level(logging.WARNING):
        assert prec.resolve_precision("bf16", CPU) == "fp32"
        assert prec.resolve_precision("fp16", CPU) == "fp32"
    assert "CPU runs fp32" in caplog.text


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_is_bf16_where_supported(
    monkeypatch: pytest.MonkeyPatch, bf16: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    cuda = torch.device("cuda")
    assert prec.resolve_precision("auto", cuda) == expected
    assert prec.resolve_precision("fp16", cuda) == "fp16"
    assert prec.resolve_precision("fp32", cuda) == "fp32"


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"train\.precision"):
        prec.resolve_precision("fp8", CPU)
    with pytest.raises(ConfigError, match=r"train\.precision"):
        TrainConfig(precision="half")
    with pytest.raises(ConfigError, match=r"train\.eval_every"):
        TrainConfig(eval_every=-1)


def test_autocast_contexts() -> None:
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with prec.autocast("fp32", CPU):
        assert layer(x).dtype == torch.float32
    with prec.autocast("bf16", CPU):  # CPU autocast exists; the loop never asks for it on CPU
        assert layer(x).dtype == torch.bfloat16
    assert not prec.grad_scaler("bf16", CPU).is_enabled()
    assert not prec.grad_scaler("fp32", CPU).is_enabled()


@pytest.mark.parametrize("name", ["steph", "adamerging"])
def test_merged_weights_stay_fp32_under_autocast(name: str) -> None:
    torch.manual_seed(0)
    model = MERGE_METHODS.get(name).build(context(4, top_k=2))
    coefficients = torch.rand(3, 5) if name == "steph" else torch.rand(5)
    with prec.autocast("bf16", CPU):
        merged = model.stack.merge(coefficients.to(torch.bfloat16))
    assert all(v.dtype == torch.float32 for v in merged.values())
    exact = model.stack.merge(coefficients.to(torch.bfloat16).float())
    assert all(torch.equal(merged[k], exact[k]) for k in merged)


def test_bf16_step_keeps_the_loss_in_fp32_and_close_to_fp32() -> None:
    torch.manual_seed(0)
    model = ABMIL(DIM, dim_emb=8, dim_attn=4).eval()
    g = torch.Generator().manual_seed(1)
    bags = [torch.randn(k, DIM, generator=g) for k in (5, 9, 13, 4)]
    parts = load_chunks(bags, torch.tensor([0, 1, 2, 3]), torch.tensor([1, 0, 1, 1]), 0)
    settings = FitSettings(epochs=1)
    full = float(backward_chunks(model, parts, settings, device=CPU, precision="fp32"))
    full_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    half = float(backward_chunks(model, parts, settings, device=CPU, precision="bf16"))
    assert abs(half - full) < 0.05 * abs(full)
    for p, ref in zip(model.parameters(), full_grads, strict=True):
        assert p.grad is not None and p.grad.dtype == torch.float32
        assert torch.allclose(p.grad, ref, atol=0.05 * float(ref.abs().max()) + 1e-4)
