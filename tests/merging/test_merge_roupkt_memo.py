"""ROUPKT's frozen expert embeddings, computed once per patient in training, give exactly the
model that recomputing them every epoch (the reference) gives."""

from __future__ import annotations

import pytest
import torch
from _merge_helpers import DIM, context

from steph.data import BagStore
from steph.merging import MERGE_METHODS
from steph.merging.roupkt import RouPKTModel
from steph.survival import SurvivalTargets
from steph.training import memo
from steph.training.batching import epoch_batches
from steph.training.loop import FitSettings, fit, predict

N_BAGS, BATCH, EPOCHS = 10, 4, 3
"""10 bags in batches of 4: two are left out of each epoch, so later epochs meet new bags."""


def data(seed: int = 11) -> tuple[SurvivalTargets, BagStore]:
    g = torch.Generator().manual_seed(seed)
    bags = {
        f"P{i}": torch.randn(int(k), DIM, generator=g)
        for i, k in enumerate(torch.randint(2, 30, (N_BAGS,), generator=g))
    }
    times = torch.linspace(100, 3000, N_BAGS, dtype=torch.float64)
    targets = SurvivalTargets(
        ids=list(bags),
        times=times,
        events=torch.tensor([1, 0] * (N_BAGS // 2)),
        bins=(times / 365).long() % 8,
    )
    return targets, BagStore.in_memory(bags)


def train(
    packs: bool, recompute: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[RouPKTModel, list[float], int]:
    """A ROUPKT model trained for a few epochs (router dropout on), and how many forwards ran
    the frozen encoders."""
    ctx = context(4, top_k=2)
    torch.manual_seed(0)
    model = MERGE_METHODS.get("roupkt").build(ctx)
    assert isinstance(model, RouPKTModel)
    model.packs_bags = packs  # type: ignore[misc]
    calls: list[int] = []
    frozen = model.embeddings

    def counting(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(1)
        return frozen(x, mask)

    monkeypatch.setattr(model, "embeddings", counting)
    if recompute:
        monkeypatch.setattr(memo.BagMemo, "rows", lambda self, name, keys, compute: compute())
    targets, store = data()
    settings = FitSettings(epochs=EPOCHS, batch_size=BATCH, lr=1e-2)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    losses = fit(model, targets, store, settings, device=torch.device("cpu"), named_params=params)
    monkeypatch.undo()
    return model, losses, len(calls)


@pytest.mark.parametrize("packs", [True, False])
def test_expert_embeddings_once_per_patient_train_the_same_model(
    packs: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, ref_losses, ref_calls = train(packs, True, monkeypatch)
    cached, losses, calls = train(packs, False, monkeypatch)
    shuffle = torch.Generator().manual_seed(FitSettings(epochs=1).seed)  # fit's draws, epoch after epoch
    batches = [b for _ in range(EPOCHS) for b in epoch_batches(N_BAGS, BATCH, shuffle)]
    seen: set[int] = set()
    new_forwards = 0  # forwards holding a bag met for the first time: a pack per step, else each bag
    for batch in batches:
        fresh = set(batch) - seen
        new_forwards += (1 if fresh else 0) if packs else len(fresh)
        seen |= fresh
    assert ref_calls == len(batches) * (1 if packs else BATCH)
    assert calls == new_forwards < ref_calls
    assert losses == pytest.approx(ref_losses, abs=1e-6)
    for (name, a), (_, b) in zip(reference.state_dict().items(), cached.state_dict().items(), strict=True):
        if name == "router.attention_net.attention_c.bias":
            # the attention score's bias moves every score of a bag alike, so the softmax hides it:
            # its gradient is rounding noise, which AdamW scales up to steps of the learning rate
            continue
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name
    targets, store = data()
    x = store.get(targets.ids[0]).unsqueeze(0)
    with torch.no_grad():
        assert torch.allclose(reference.eval()(x).logits, cached.eval()(x).logits, atol=1e-6)


def test_memo_returns_stored_rows_and_computes_a_forward_with_a_new_bag() -> None:
    computed: list[tuple[int, ...]] = []

    def rows_of(positions: tuple[int, ...]) -> torch.Tensor:
        computed.append(positions)
        return torch.tensor([[float(p), 2.0 * p] for p in positions])

    with memo.bag_memo(6) as store:
        for positions in [(0, 3), (3, 0), (3, 5), (5, 0, 3)]:
            with memo.forward_bags(memo.bag_keys(positions)):
                got = memo.memoized("t", lambda p=positions: rows_of(p))
            assert torch.equal(got, torch.tensor([[float(p), 2.0 * p] for p in positions]))
        assert store.stored("t") == 3
    assert computed == [(0, 3), (3, 5)]
    assert memo.memoized("t", lambda: torch.ones(1)).item() == 1.0  # outside fit: computed
    with (
        memo.bag_memo(2),
        memo.forward_bags(memo.bag_keys([0, 1])),
        pytest.raises(ValueError, match="3 rows"),
    ):
        memo.memoized("t", lambda: torch.zeros(3, 2))


def test_predictions_of_training_patients_read_the_experts_computed_in_training(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inside a memo of the training patients (as a merge unit runs fit, then predict), the
    patients met in training are predicted without running the frozen encoders again, with the
    hazards that recomputing them gives; patients outside the memo are computed."""
    ctx = context(4, top_k=2)
    torch.manual_seed(0)
    model = MERGE_METHODS.get("roupkt").build(ctx)
    assert isinstance(model, RouPKTModel)
    embedded: list[int] = []
    frozen = model.embeddings

    def counting(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        rows = frozen(x, mask)
        embedded.append(int(rows.shape[0]))
        return rows

    monkeypatch.setattr(model, "embeddings", counting)
    targets, store = data()
    train = SurvivalTargets(targets.ids[:8], targets.times[:8], targets.events[:8], targets.bins[:8])
    held_out = targets.ids[8:]
    settings = FitSettings(epochs=1, batch_size=BATCH, lr=1e-2)  # 8 bags, batches of 4: all met
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    cpu = torch.device("cpu")
    with memo.bag_memo(len(train), ids=train.ids) as kept:
        fit(model, train, store, settings, device=cpu, named_params=params)
        assert kept.stored("roupkt.experts") == len(train)
        embedded.clear()
        from_memo, _ = predict(model, train.ids, store, device=cpu, batch_size=3)
        assert embedded == []  # every training patient's experts came from training
        held, _ = predict(model, held_out, store, device=cpu, batch_size=3)
        assert sum(embedded) == len(held_out)
    embedded.clear()
    recomputed, _ = predict(model, train.ids, store, device=cpu, batch_size=3)
    assert sum(embedded) == len(train)  # no memo: computed
    torch.testing.assert_close(from_memo, recomputed, atol=1e-6, rtol=0)
    alone, _ = predict(model, held_out, store, device=cpu, batch_size=3)
    torch.testing.assert_close(held, alone, atol=0, rtol=0)


def test_a_memo_places_patients_by_id_and_knows_which_it_lacks() -> None:
    """Positions by patient id; None for a memo without ids or lacking a patient (fit then opens
    its own memo, and predict computes)."""
    outer = memo.BagMemo(2, ids=["A", "B"])
    assert outer.positions(["B", "A"]) == [1, 0]
    assert outer.positions(["A", "C"]) is None
    assert memo.BagMemo(2).positions(["A"]) is None
    with pytest.raises(ValueError, match="2 distinct ids"):
        memo.BagMemo(2, ids=["A", "A"])
