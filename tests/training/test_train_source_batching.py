"""Padded, masked batches give the reference's one-bag-at-a-time results."""

from __future__ import annotations

import torch

from steph.data import BagStore
from steph.models.abmil import ABMIL
from steph.survival import SurvivalTargets, surv_mle_loss, time_to_bin
from steph.training.batching import pad_bags, size_chunks
from steph.training.loop import FitSettings, fit, predict


def cohort(n: int = 16, dim: int = 12, seed: int = 0) -> tuple[dict[str, torch.Tensor], SurvivalTargets]:
    g = torch.Generator().manual_seed(seed)
    bags = {
        f"p{i}": torch.randn(int(torch.randint(3, 40, (1,), generator=g)), dim, generator=g) for i in range(n)
    }
    times = torch.rand(n, generator=g, dtype=torch.float64) * 5000
    events = torch.randint(0, 2, (n,), generator=g)
    return bags, SurvivalTargets(list(bags), times, events, time_to_bin(times))


def test_batched_loss_equals_one_bag_per_forward() -> None:
    """The reference forwards 16 bags one by one, stacks the 16 outputs and takes one loss."""
    bags, data = cohort()
    torch.manual_seed(0)
    model = ABMIL(12, dim_emb=24, dim_attn=8).eval()
    x, mask = pad_bags([bags[pid] for pid in data.ids])
    batched = surv_mle_loss(torch.sigmoid(model(x, mask)), data.bins, data.events)
    batched_grads = torch.autograd.grad(batched, list(model.parameters()))
    stacked = torch.cat([model(bags[pid].unsqueeze(0)) for pid in data.ids])
    single = surv_mle_loss(torch.sigmoid(stacked), data.bins, data.events)
    single_grads = torch.autograd.grad(single, list(model.parameters()))
    assert abs(float(batched.detach()) - float(single.detach())) < 1e-5
    for a, b in zip(batched_grads, single_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_chunked_batches_train_like_whole_batches() -> None:
    bags, data = cohort(n=20)
    store = BagStore.in_memory(bags)
    results = []
    for cap in (0, 60):
        torch.manual_seed(0)
        model = ABMIL(12, dim_emb=24, dim_attn=8, dropout=0.0)
        losses = fit(
            model,
            data,
            store,
            FitSettings(epochs=2, batch_size=8, max_batch_patches=cap),
            device=torch.device("cpu"),
        )
        results.append((losses, {k: v.detach().clone() for k, v in model.named_parameters()}))
    (loss_a, params_a), (loss_b, params_b) = results
    assert all(abs(a - b) < 1e-5 for a, b in zip(loss_a, loss_b, strict=True))
    # The attention-score bias has a zero gradient (softmax is shift invariant): Adam turns its
    # rounding noise into lr-sized steps, so it is the one tensor that may differ.
    del params_a["attention_net.attention_c.bias"], params_b["attention_net.attention_c.bias"]
    assert all(torch.allclose(params_a[k], params_b[k], atol=1e-7) for k in params_a)
    whole, _ = predict(model, data.ids, store, device=torch.device("cpu"))
    chunked, _ = predict(model, data.ids, store, device=torch.device("cpu"), max_batch_patches=50)
    assert torch.allclose(whole, chunked, atol=1e-6)


def test_size_chunks_respects_the_cap() -> None:
    lengths = [30, 2, 7, 7, 100, 1, 15]
    parts = size_chunks(lengths, 40)
    assert sorted(i for p in parts for i in p) == list(range(len(lengths)))
    for part in parts:
        assert len(part) == 1 or len(part) * max(lengths[i] for i in part) <= 40
    assert size_chunks(lengths, 0) == [list(range(len(lengths)))]


def fit_two_epochs(data: SurvivalTargets, bags: object, **kwargs: object) -> None:
    """A tiny ABMIL (D = 12) trained 2 epochs of 2 batches of 8 bags on CPU."""
    fit(
        ABMIL(12, dim_emb=8, dim_attn=4),
        data,
        bags,  # type: ignore[arg-type]
        FitSettings(epochs=2, batch_size=8),
        device=torch.device("cpu"),
        **kwargs,  # type: ignore[arg-type]
    )


def test_the_next_epochs_first_batch_is_read_during_this_epoch() -> None:
    """The loader crosses epoch boundaries: when epoch 1 ends, epoch 2's first batch has been
    asked for already; the batches are still the per-epoch seeded shuffles."""
    import threading

    from steph.training.batching import epoch_batches

    bags, data = cohort(n=16)
    store = BagStore.in_memory(bags)
    asked: list[str] = []
    second_epoch_asked = threading.Event()

    class Recording:
        dim = 12

        def get(self, patient_id: str) -> torch.Tensor:
            asked.append(patient_id)
            if len(asked) > 16:  # epoch 1 asks for 16 bags (2 batches of 8)
                second_epoch_asked.set()
            return store.get(patient_id)

    seen_at_epoch_end: list[bool] = []

    def on_epoch(epoch: int, _loss: float) -> None:
        if epoch == 1:
            seen_at_epoch_end.append(second_epoch_asked.wait(timeout=5))

    torch.manual_seed(0)
    fit_two_epochs(data, Recording(), on_epoch=on_epoch)
    assert seen_at_epoch_end == [True]
    generator = torch.Generator().manual_seed(FitSettings(epochs=2).seed)
    expected = [data.ids[i] for _ in range(2) for batch in epoch_batches(16, 8, generator) for i in batch]
    assert asked == expected


def test_on_cpu_the_loader_reads_and_the_training_thread_builds_the_packs(monkeypatch) -> None:
    """Packs (copies of small bags end to end) are built by the training thread: built in the
    loader thread, their copies competed with the compute's own threads (see staging). The
    chunks' SurvMLE labels are built with them (on CUDA: by the loader thread)."""
    import threading

    import steph.training.loop as loop

    bags, data = cohort(n=16)
    store = BagStore.in_memory(bags)
    readers: set[str] = set()
    builders: list[tuple[str, bool]] = []

    class Recording:
        dim = 12

        def get(self, patient_id: str) -> torch.Tensor:
            readers.add(threading.current_thread().name)
            return store.get(patient_id)

    def load_chunks(*args, **kwargs):
        parts = real(*args, **kwargs)
        packed, labelled = (
            any(p.segments is not None for p in parts),
            all(p.labels is not None for p in parts),
        )
        builders.append((threading.current_thread().name, packed, labelled))
        return parts

    real = loop.load_chunks
    monkeypatch.setattr(loop, "load_chunks", load_chunks)
    fit_two_epochs(data, Recording())
    assert len(readers) == 1 and next(iter(readers)).startswith("bag-loader")
    # 2 epochs of 2 batches, each packed, with its SurvMLE labels built with the packs
    assert builders == [(threading.main_thread().name, True, True)] * 4


def test_the_stager_records_every_tensor_of_a_chunk() -> None:
    """``chunk_tensors`` (the tensors ``DeviceStager.claim`` marks as used by the compute stream)
    holds every tensor a packed, keyed, labelled chunk carries, found by walking its fields."""
    import dataclasses

    from steph.survival import LabelSpec
    from steph.training.batching import load_chunks
    from steph.training.staging import chunk_tensors

    g = torch.Generator().manual_seed(0)
    bags = [torch.randn(k, 4, generator=g) for k in (3, 5, 2)]
    parts = load_chunks(
        bags, torch.tensor([0, 1, 2]), torch.tensor([1, 0, 1]), 100, True, True, 100, [4, 7, 9], LabelSpec(8)
    )
    (part,) = parts

    def walk(value: object) -> list[torch.Tensor]:
        if isinstance(value, torch.Tensor):
            return [value]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return [t for f in dataclasses.fields(value) for t in walk(getattr(value, f.name))]
        if isinstance(value, tuple):
            return [t for item in value for t in walk(item)]
        return []

    held = walk(part)
    assert part.segments is not None and part.keys is not None and part.labels is not None
    assert len(held) == 12  # x, bins, events; 4 of the segments, 1 of the keys, 4 labels
    assert {id(t) for t in chunk_tensors(part)} == {id(t) for t in held}


def test_on_cpu_fit_and_predict_size_their_threads_from_the_products(monkeypatch) -> None:
    """Small matrix products run on one intra-op thread (a parallel region would cost more than
    it saves), large ones on what the process has; the count is restored after fit and predict."""
    import steph.training.loop as loop

    bags, data = cohort(n=16)  # D = 12, 3-40 patches a bag: products of a few kFLOP
    store = BagStore.in_memory(bags)
    cpu = torch.device("cpu")
    model = ABMIL(12, dim_emb=8, dim_attn=4)
    mean = sum(int(b.shape[0]) for b in bags.values()) / len(bags)
    # a packing model: a pack of 8 bags (under CPU_PACK_PATCHES) x D x E
    assert loop.cpu_product_flops(model, store, data.ids, 8, cpu) == 2.0 * (8 * mean) * 12 * 8
    model.packs_bags = False  # a model that does not pack runs every bag alone on CPU
    assert loop.cpu_product_flops(model, store, data.ids, 8, cpu) == 2.0 * mean * 12 * 8
    del model.packs_bags
    assert loop.cpu_product_flops(model, store, data.ids, 8, torch.device("meta")) is None

    class Unsized:  # a source that does not know its bags' sizes: threads left alone
        dim = 12

        def get(self, patient_id: str) -> torch.Tensor:
            return store.get(patient_id)

    assert loop.cpu_product_flops(model, Unsized(), data.ids, 8, cpu) is None

    seen: list[int] = []
    real_forward = model.forward

    def forward(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return real_forward(x, mask)

    monkeypatch.setattr(model, "forward", forward)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fit(model, data, store, FitSettings(epochs=1, batch_size=8), device=cpu)
        predict(model, data.ids, store, device=cpu)
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
        seen.clear()
        monkeypatch.setattr(loop, "cpu_product_flops", lambda *args: 1e12)  # a large product
        fit(model, data, store, FitSettings(epochs=1, batch_size=8), device=cpu)
        predict(model, data.ids, store, device=cpu)
        assert seen and set(seen) == {2}
    finally:
        torch.set_num_threads(before)
