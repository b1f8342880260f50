"""Chunked execution (real patches only) gives the loss and gradients of one whole-batch pass."""

from __future__ import annotations

import pytest
import torch
from _merge_helpers import DIM, context

from steph.data import BagStore
from steph.merging import MERGE_METHODS
from steph.merging.adamerging import AdaMergingModel
from steph.models.abmil import ABMIL, capture_attention, encode, packed_bags, patch_chunking
from steph.survival import surv_mle_loss
from steph.training.batching import auto_patch_budget, pad_bags, plan_chunks, plan_packs, shares_forwards
from steph.training.loop import (
    FitSettings,
    as_output,
    backward_chunks,
    label_spec,
    load_chunks,
    pack_limit,
    packs,
    predict,
)

SETTINGS = FitSettings(epochs=1)
LENGTHS = (3, 41, 7, 8, 19, 2, 64, 9, 11, 30, 5, 6, 17, 4, 25, 12)
"""16 bags, heavy-tailed: the longest exceed the smallest budget below (patch-chunked pooling)."""


def batch(seed: int = 3) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    bags = [torch.randn(k, DIM, generator=g) for k in LENGTHS]
    bins = torch.randint(0, 8, (len(bags),), generator=g)
    events = torch.tensor([1, 0] * (len(bags) // 2))
    return bags, bins, events


def reference_gradients(model: torch.nn.Module, bags, bins, events) -> tuple[float, list[torch.Tensor]]:
    """One padded forward of the whole batch, one SurvMLE (+ aux), one backward (independent path)."""
    x, mask = pad_bags(bags)
    out = as_output(model(x, mask))
    loss = surv_mle_loss(torch.sigmoid(out.logits), bins, events)
    if out.aux_loss is not None:
        loss = loss + out.aux_loss
    params = [p for p in model.parameters() if p.requires_grad]
    return float(loss.detach()), [g.clone() for g in torch.autograd.grad(loss, params)]


def chunked_gradients(
    model: torch.nn.Module,
    bags,
    bins,
    events,
    budget: int,
    share: bool = True,
    pack: bool = False,
    staged_labels: bool = False,
):
    """``staged_labels``: each chunk's SurvMLE labels built with the chunks (as the loader
    thread builds them), else by the training step."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    spec = label_spec(model, SETTINGS) if staged_labels else None
    assert spec is not None or not staged_labels
    parts = load_chunks(bags, bins, events, budget, share=share, pack=pack, label_spec=spec)
    assert all((part.labels is not None) == staged_labels for part in parts)
    loss = float(backward_chunks(model, parts, SETTINGS, device=torch.device("cpu"), budget=budget))
    return loss, [p.grad.clone() for p in params], len(parts)


def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    built: dict[str, torch.nn.Module] = {"abmil": ABMIL(DIM, dim_emb=8, dim_attn=4)}
    for name in ("steph", "roupkt", "adamerging"):
        method = MERGE_METHODS.get(name)
        built[name] = method.build(context(4, top_k=2))
    built["steph-fnn"] = MERGE_METHODS.get("steph").build(context(4, top_k=2, mix="fnn"))
    return built


@pytest.mark.parametrize("name", ["abmil", "steph", "steph-fnn", "roupkt", "adamerging"])
@pytest.mark.parametrize("budget", [1, 16, 48, 1000])
@pytest.mark.parametrize("staged_labels", [False, True])
def test_chunked_batch_has_the_whole_batch_loss_and_gradients(
    name: str, budget: int, staged_labels: bool
) -> None:
    model = models()[name].eval()  # no dropout: the same function on both paths
    bags, bins, events = batch()
    loss, grads = reference_gradients(model, bags, bins, events)
    chunk_loss, chunk_grads, n_parts = chunked_gradients(
        model, bags, bins, events, budget, staged_labels=staged_labels
    )
    assert n_parts > 1
    assert abs(chunk_loss - loss) < 1e-6
    for a, b in zip(grads, chunk_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), float((a - b).abs().max())


@pytest.mark.parametrize("name", ["abmil", "steph", "steph-fnn", "roupkt", "adamerging"])
def test_every_bag_alone_has_the_whole_batch_loss_and_gradients(name: str) -> None:
    """The CPU path: no shared forward, no padded copy, no mask (budget 16: long bags patch-chunked)."""
    model = models()[name].eval()
    bags, bins, events = batch()
    loss, grads = reference_gradients(model, bags, bins, events)
    chunk_loss, chunk_grads, n_parts = chunked_gradients(model, bags, bins, events, 16, share=False)
    assert n_parts == len(bags)
    assert abs(chunk_loss - loss) < 1e-6
    for a, b in zip(grads, chunk_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), float((a - b).abs().max())


@pytest.mark.parametrize("budget", [16, 48, 1000])
def test_packed_bags_have_the_whole_batch_loss_and_gradients(budget: int) -> None:
    """The CPU path of ABMIL: bags laid end to end in packs of real patches, softmax per bag."""
    model = models()["abmil"].eval()
    bags, bins, events = batch()
    loss, grads = reference_gradients(model, bags, bins, events)
    chunk_loss, chunk_grads, n_parts = chunked_gradients(model, bags, bins, events, budget, pack=True)
    assert 1 <= n_parts < len(bags)
    assert abs(chunk_loss - loss) < 1e-6
    for a, b in zip(grads, chunk_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), float((a - b).abs().max())


def test_models_that_accept_packs_are_packed_on_every_device() -> None:
    """Per-bag encoders (STEPH, hypernetwork AdaMerging) included: on CPU their grouped product
    runs bag by bag, the rest of the pack once for all its bags."""
    built = packed_models()
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert all(packs(model) for model in built.values())
    assert not packs(torch.nn.Linear(2, 2))
    assert pack_limit(cuda, 5000) == 5000 and pack_limit(cpu, 5000) is None
    parts = plan_packs(LENGTHS, 48)
    assert sorted(i for p in parts for i in p) == list(range(len(LENGTHS)))
    assert all(len(p) == 1 or sum(LENGTHS[i] for i in p) <= 48 for p in parts)


PACKED_MODELS = ["abmil", "steph", "steph-fnn", "roupkt", "adamerging", "adamerging-hypernet"]


def packed_models() -> dict[str, torch.nn.Module]:
    built = models()
    torch.manual_seed(1)
    ctx = context(4)
    built["adamerging-hypernet"] = AdaMergingModel(
        ctx.theta0,
        [ctx.target_vector, *ctx.source_vectors],
        dim_in=DIM,
        dim_emb=8,
        time_bins=32,
        dropout=0.25,
        gamma=0.005,
        hypernet=True,
    )
    return built


@pytest.mark.parametrize("name", PACKED_MODELS)
@pytest.mark.parametrize("limit", [40, 1000])
def test_the_cuda_path_packs_have_the_whole_batch_loss_and_gradients(name: str, limit: int) -> None:
    """What CUDA runs (packs up to the budget, per-bag encoders as grouped products), on CPU tensors."""
    model = packed_models()[name].eval()
    bags, bins, events = batch()
    loss, grads = reference_gradients(model, bags, bins, events)
    params = [p for p in model.parameters() if p.requires_grad]
    parts = load_chunks(bags, bins, events, limit, share=True, pack=True, pack_limit=limit)
    assert any(p.segments is not None for p in parts) and len(parts) < len(bags)
    packed_loss = float(backward_chunks(model, parts, SETTINGS, device=torch.device("cpu"), budget=limit))
    assert abs(packed_loss - loss) < 1e-6
    for p, g in zip(params, grads, strict=True):
        assert p.grad is not None
        assert torch.allclose(p.grad, g, atol=1e-6, rtol=0), float((p.grad - g).abs().max())


@pytest.mark.parametrize("name", ["steph", "steph-fnn", "adamerging-hypernet"])
def test_on_cpu_per_bag_encoders_run_in_packs_with_the_whole_batch_loss_and_gradients(name: str) -> None:
    """The CPU path of a model with one merged encoder per bag, as ``fit`` plans it (no shared
    padded forward, packs of up to ``CPU_PACK_PATCHES`` real patches): several bags a pack, the
    loss and gradients of the whole batch."""
    model = packed_models()[name].eval()
    bags, bins, events = batch()
    loss, grads = reference_gradients(model, bags, bins, events)
    params = [p for p in model.parameters() if p.requires_grad]
    cpu = torch.device("cpu")
    parts = load_chunks(bags, bins, events, 0, shares_forwards(cpu), packs(model), pack_limit(cpu, 0))
    assert len(parts) == 1 and parts[0].segments is not None
    assert parts[0].segments.count == len(bags)
    packed_loss = float(backward_chunks(model, parts, SETTINGS, device=cpu, budget=0))
    assert abs(packed_loss - loss) < 1e-6
    for p, g in zip(params, grads, strict=True):
        assert p.grad is not None
        assert torch.allclose(p.grad, g, atol=1e-6, rtol=0), float((p.grad - g).abs().max())


@pytest.mark.parametrize("name", ["steph", "adamerging-hypernet"])
def test_on_cpu_packed_predictions_of_per_bag_encoders_are_those_of_each_bag_alone(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``predict`` packs on CPU too: hazards and per-bag extras (STEPH's ``w``, ``lambda`` and
    ``selected``; the hypernetwork's coefficients) come back in the patients' order, equal to
    each bag's own forward."""
    import steph.training.loop as loop

    packed: list[int] = []

    def chunk_input(*args, **kwargs):
        x, mask, seg = real(*args, **kwargs)
        packed.append(seg.count if seg is not None else 0)
        return x, mask, seg

    real = loop.chunk_input
    monkeypatch.setattr(loop, "chunk_input", chunk_input)
    model = packed_models()[name].eval()
    bags, _, _ = batch()
    store = BagStore.in_memory({f"p{i}": b for i, b in enumerate(bags)})
    ids = [f"p{i}" for i in range(len(bags))]
    hazards, extras = predict(model, ids, store, device=torch.device("cpu"), batch_size=16)
    assert packed == [len(bags)]  # one pack of the 16 bags (263 patches)
    with torch.no_grad():
        alone = [as_output(model(b.unsqueeze(0))) for b in bags]
    assert torch.allclose(hazards, torch.sigmoid(torch.cat([o.logits for o in alone])), atol=1e-6)
    assert extras and set(extras) == set(alone[0].extras)
    for key, value in extras.items():
        expected = torch.cat([o.extras[key].float() for o in alone])
        assert torch.allclose(value, expected, atol=1e-6), key


def test_packed_attention_and_predictions_are_those_of_each_bag_alone() -> None:
    torch.manual_seed(4)
    model = ABMIL(DIM, dim_emb=8, dim_attn=4).eval()
    bags, _, _ = batch()
    few = bags[:5]
    with capture_attention() as alone_maps:
        alone = torch.cat([model(b.unsqueeze(0)) for b in few])
    with packed_bags([len(b) for b in few]), capture_attention() as packed_maps:
        packed = model(torch.cat(few).unsqueeze(0))
    assert torch.allclose(alone, packed, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(alone_maps, packed_maps, strict=True))
    store = BagStore.in_memory({f"p{i}": b for i, b in enumerate(bags)})
    ids = [f"p{i}" for i in range(len(bags))]
    whole, _ = predict(model, ids, store, device=torch.device("cpu"), max_batch_patches=-1)
    cpu_path, _ = predict(model, ids, store, device=torch.device("cpu"), max_batch_patches=0)
    assert torch.allclose(whole, cpu_path, atol=1e-6)


def test_plan_chunks_pays_little_padding_and_covers_the_batch() -> None:
    parts = plan_chunks(LENGTHS, 48)
    assert sorted(i for p in parts for i in p) == list(range(len(LENGTHS)))
    for part in parts:
        longest, real = max(LENGTHS[i] for i in part), sum(LENGTHS[i] for i in part)
        assert len(part) == 1 or (len(part) * longest <= 48 and len(part) * longest <= 1.1 * real)
    assert plan_chunks(LENGTHS, -1) == [list(range(len(LENGTHS)))]
    alone = plan_chunks(LENGTHS, 48, share=False)
    assert sorted(i for p in alone for i in p) == list(range(len(LENGTHS)))
    assert all(len(p) == 1 for p in alone)
    assert auto_patch_budget(torch.device("cpu"), 1536) > 0
    assert not shares_forwards(torch.device("cpu")) and shares_forwards(torch.device("cuda"))


def test_patch_chunked_pooling_equals_one_softmax_with_padding_and_attention() -> None:
    torch.manual_seed(1)
    model = ABMIL(DIM, dim_emb=8, dim_attn=4, dropout=0.0)
    bags, _, _ = batch()
    x, mask = pad_bags(bags)
    params = model.encoder_params()
    with capture_attention() as whole_alpha:
        whole = encode(params, x, mask)
    with patch_chunking(10), capture_attention() as chunk_alpha:
        chunked = encode(params, x, mask)
    assert torch.allclose(whole, chunked, atol=1e-6)
    assert torch.allclose(whole_alpha[0], chunk_alpha[0], atol=1e-7)
    assert float(chunk_alpha[0][~mask].abs().max()) == 0.0


@pytest.mark.parametrize(("patches", "chunk"), [(50, 7), (1500, 600)])
def test_dropout_masks_survive_the_checkpoint_recompute(
    monkeypatch: pytest.MonkeyPatch, patches: int, chunk: int
) -> None:
    """With dropout, backward recomputes each chunk with the forward's masks: the gradients equal
    those of the same chunked forward run without checkpointing (activations kept). Chunks of
    7 patches draw torch's masks, chunks of 600 (2,400 elements a mask) stephctl's
    (``steph.models.dropout.SMALL``)."""
    import steph.models.abmil as abmil

    torch.manual_seed(2)
    model = ABMIL(DIM, dim_emb=8, dim_attn=4, dropout=0.5).train()
    bag = torch.randn(1, patches, DIM)

    def gradients() -> list[torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(5)
        with patch_chunking(chunk):
            model(bag).square().sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    checkpointed = gradients()
    monkeypatch.setattr(abmil, "checkpoint", lambda fn, *args, **_: fn(*args))
    kept = gradients()
    for a, b in zip(checkpointed, kept, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_predict_is_the_same_under_every_budget() -> None:
    torch.manual_seed(0)
    model = models()["steph"]

    bags, _, _ = batch()
    store = BagStore.in_memory({f"p{i}": b for i, b in enumerate(bags)})
    ids = [f"p{i}" for i in range(len(bags))]
    whole, extras = predict(model, ids, store, device=torch.device("cpu"), max_batch_patches=-1)
    for budget in (0, 1, 16):
        chunked, chunk_extras = predict(
            model, ids, store, device=torch.device("cpu"), max_batch_patches=budget
        )
        assert torch.allclose(whole, chunked, atol=1e-6)
        assert torch.equal(extras["selected"], chunk_extras["selected"])
