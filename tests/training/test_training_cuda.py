"""The CUDA execution path: batches staged on the GPU by the loader thread (side stream, padded
chunks built on the device) give the whole-batch loss and gradients, and training on CUDA follows
training on CPU. Skipped without a GPU (CI has none; run on a lent GPU machine)."""

from __future__ import annotations

import copy

import pytest
import torch
from test_train_source_batching import cohort
from test_training_chunks import SETTINGS, batch, models, reference_gradients

from steph.data import BagStore
from steph.models.abmil import ABMIL
from steph.training.batching import load_chunks, pad_bags
from steph.training.loop import FitSettings, backward_chunks, fit, predict
from steph.training.staging import DeviceStager

CPU = torch.device("cpu")


def test_staging_on_cpu_builds_at_claim_and_hands_the_bags_through_uncopied() -> None:
    bags, bins, events = batch()
    stager = DeviceStager(CPU)
    built: list[int] = []

    def build(on: list[torch.Tensor]) -> list:
        built.append(len(on))
        return load_chunks(on, bins, events, 16, share=False)

    staged = stager.stage(bags, build)
    assert built == []  # on CPU the chunks are built by the training thread, at claim
    parts = stager.claim(staged)
    assert built == [len(bags)] and stager.stream is None
    by_length = sorted(bags, key=len)
    assert [p.x.untyped_storage().data_ptr() for p in parts] == [
        b.untyped_storage().data_ptr() for b in by_length
    ]


def untie_top_k(model: torch.nn.Module, bags: list[torch.Tensor]) -> None:
    """Give STEPH an output layer of ``w`` without exact zeros (softplus), so that its top-k is
    the same on every device. With relu, most bags of this batch have 3 of 4 weights at exactly
    0 and top-2 must pick among tied zeros: ``torch.topk`` takes the highest index on CPU and
    the lowest on CUDA. The pick changes only the lambda regulariser's terms of zero-weight
    sources (the merged weights are the same), but it moved this batch's loss by 0.006 (measured
    on an H200; reproduced on CPU by breaking the ties toward the lowest index)."""
    model.hypernet.output = torch.nn.Softplus()
    with torch.no_grad():
        top = model.mixing(*pad_bags(bags))[0].sort(dim=1, descending=True).values
    assert float((top[:, 1] - top[:, 2]).min()) > 1e-3  # top-2 unambiguous


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def gpu() -> torch.device:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch.device("cuda")


@cuda
@pytest.mark.parametrize("name", ["abmil", "steph", "steph-fnn", "roupkt", "adamerging"])
@pytest.mark.parametrize("budget", [16, 48, 1000])
def test_staged_cuda_chunks_have_the_whole_batch_gradients(name: str, budget: int, gpu: torch.device) -> None:
    model = models()[name].eval()
    bags, bins, events = batch()
    if name.startswith("steph"):
        untie_top_k(model, bags)
    loss, grads = reference_gradients(copy.deepcopy(model), bags, bins, events)
    model.to(gpu)
    stager = DeviceStager(gpu)
    parts = stager.claim(stager.stage(bags, lambda on: load_chunks(on, bins, events, budget, share=True)))
    assert all(p.x.is_cuda for p in parts)
    for p in model.parameters():
        p.grad = None
    chunk_loss = float(backward_chunks(model, parts, SETTINGS, device=gpu, budget=budget))
    assert abs(chunk_loss - loss) < 1e-5
    chunk_grads = [p.grad.cpu() for p in model.parameters() if p.requires_grad]
    for a, b in zip(grads, chunk_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), float((a - b).abs().max())


@cuda
def test_training_on_cuda_follows_training_on_cpu(gpu: torch.device) -> None:
    bags, data = cohort(n=40)
    store = BagStore.in_memory(bags)
    results = []
    for device in (CPU, gpu):
        torch.manual_seed(0)
        model = ABMIL(12, dim_emb=24, dim_attn=8, dropout=0.0)
        losses = fit(model, data, store, FitSettings(epochs=3, batch_size=8), device=device)
        hazards, _ = predict(model, data.ids, store, device=device)
        results.append((losses, hazards))
    (cpu_losses, cpu_hazards), (gpu_losses, gpu_hazards) = results
    assert all(abs(a - b) < 1e-4 for a, b in zip(cpu_losses, gpu_losses, strict=True))
    assert torch.allclose(cpu_hazards, gpu_hazards, atol=1e-4)


@cuda
@pytest.mark.parametrize("name", ["abmil", "steph", "steph-fnn", "roupkt", "adamerging"])
def test_cuda_packs_have_the_whole_batch_gradients(name: str, gpu: torch.device) -> None:
    """What CUDA runs now: every bag of the batch in one pack (fp32: per-bag encoders bag by bag)."""
    model = models()[name].eval()
    bags, bins, events = batch()
    if name.startswith("steph"):
        untie_top_k(model, bags)
    loss, grads = reference_gradients(copy.deepcopy(model), bags, bins, events)
    model.to(gpu)
    stager = DeviceStager(gpu)
    build = lambda on: load_chunks(on, bins, events, 1000, share=True, pack=True, pack_limit=1000)  # noqa: E731
    parts = stager.claim(stager.stage(bags, build))
    assert len(parts) == 1 and parts[0].segments is not None and parts[0].segments.index.is_cuda
    for p in model.parameters():
        p.grad = None
    packed_loss = float(backward_chunks(model, parts, SETTINGS, device=gpu, budget=1000))
    assert abs(packed_loss - loss) < 1e-5
    packed_grads = [p.grad.cpu() for p in model.parameters() if p.requires_grad]
    for a, b in zip(grads, packed_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), float((a - b).abs().max())


@cuda
def test_steph_packs_in_bf16_use_the_grouped_kernel_and_follow_fp32(
    gpu: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bf16 autocast on CUDA: STEPH's per-bag encoders as one grouped product, the loss within
    bf16's precision of the fp32 CPU loss."""
    from steph.models import abmil

    if torch.cuda.get_device_capability(gpu) < (8, 0):
        pytest.skip("grouped bf16 products need compute capability 8.0")
    model = models()["steph"].eval()
    bags, bins, events = batch()
    untie_top_k(model, bags)
    loss, _ = reference_gradients(copy.deepcopy(model), bags, bins, events)
    calls: list[int] = []
    real = torch.nn.functional.grouped_mm
    monkeypatch.setattr(torch.nn.functional, "grouped_mm", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(abmil, "_GROUPED_FAILED", False)
    model.to(gpu)
    parts = load_chunks(
        [b.to(gpu) for b in bags], bins.to(gpu), events.to(gpu), 1000, pack=True, pack_limit=1000
    )
    bf16_loss = float(backward_chunks(model, parts, SETTINGS, device=gpu, budget=1000, precision="bf16"))
    assert calls and not abmil._GROUPED_FAILED
    assert abs(bf16_loss - loss) < 0.02 * abs(loss)


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_adamw_on_cuda_equals_torchs_fused_adamw(dtype: torch.dtype, gpu: torch.device) -> None:
    """stephctl's AdamW takes the fused kernel on CUDA: the same updates as
    ``torch.optim.AdamW(fused=True)`` to the bit, decay groups and a skipped parameter included,
    in fp32 and bf16 parameters."""
    from steph.training.optim import build_optimizer

    torch.manual_seed(0)
    ours_model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).to(
        gpu, dtype
    )
    ref_model = copy.deepcopy(ours_model)
    ours = build_optimizer(ours_model.named_parameters(), lr=3e-3, weight_decay=0.05)
    decay = [p for p in ref_model.parameters() if p.ndim >= 2]
    rest = [p for p in ref_model.parameters() if p.ndim < 2]
    ref = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=3e-3, fused=True
    )
    g = torch.Generator().manual_seed(1)
    for step in range(5):
        x = torch.randn(4, 6, generator=g).to(gpu, dtype)
        for model, opt in ((ours_model, ours), (ref_model, ref)):
            opt.zero_grad(set_to_none=True)
            out = model[1](model[0](x)) if step == 2 else model(x)  # the last layer skips a step
            out.float().square().mean().backward()
            opt.step()
        for a, b in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
            assert torch.equal(a, b), (step, float((a - b).abs().max()))
