"""Several units trained in one step give each unit its own ``fit`` run's result, dropout included."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _merge_helpers import DIM, context, task_vector

from steph.data import BagStore
from steph.merging import MERGE_METHODS
from steph.merging.adamerging import AdaMergingModel, StackedAdaMerging
from steph.runtime import seed_everything
from steph.survival import SurvivalTargets
from steph.training import stacked
from steph.training.loop import FitSettings, fit, predict
from steph.training.memo import BagMemo, using_memo
from steph.training.stacked import UnitsDiverged, fit_stacked, stack_refusal

SETTINGS = FitSettings(epochs=3, batch_size=8, lr=1e-2, seed=42)
"""Three epochs of batches of 8 with a large learning rate: the units' parameters move far."""
CPU = torch.device("cpu")


def cohort(n: int = 60, seed: int = 5) -> tuple[BagStore, SurvivalTargets]:
    """``n`` patients with bags of 3-40 patches, times and events."""
    g = torch.Generator().manual_seed(seed)
    bags = {
        f"P{i:02d}": torch.randn(int(k), DIM, generator=g)
        for i, k in enumerate(torch.randint(3, 41, (n,), generator=g))
    }
    times = torch.rand(n, generator=g, dtype=torch.float64) * 4000
    return BagStore.in_memory(bags), SurvivalTargets(
        ids=list(bags), times=times, events=torch.randint(0, 2, (n,), generator=g), bins=(times / 365).long()
    )


def split(data: SurvivalTargets, keep: list[int]) -> SurvivalTargets:
    index = torch.tensor(keep)
    return SurvivalTargets(
        [data.ids[i] for i in keep], data.times[index], data.events[index], data.bins[index]
    )


def units(data: SurvivalTargets) -> list[SurvivalTargets]:
    """Three training splits of 33, 35 and 38 patients (4 steps of 8 each), overlapping."""
    return [
        split(data, list(range(0, 33))),
        split(data, list(range(10, 45))),
        split(data, list(range(22, 60))),
    ]


def build(method: str, fold: int, **options: object) -> torch.nn.Module:
    """The fold's model, as the merge worker builds it: seeded, each fold its own target vector."""
    ctx = dataclasses.replace(context(**options), fold=fold, target_vector=task_vector(100 + fold))
    seed_everything(42)
    return MERGE_METHODS.get(method).build(ctx)


def ada(method: str, fold: int, **options: object) -> AdaMergingModel:
    model = build(method, fold, **options)
    assert isinstance(model, AdaMergingModel)
    return model


DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("adamerging", {}),
        ("adamerging", {"top_k_loss": 2, "clamp_weights": True}),
        ("ties-adamerging", {}),
        ("roupkt", {"top_k": 2}),
        ("adamerging", {"hypernet": True, "top_k_loss": 2}),
        ("iso-c-adamerging", {"hypernet": True, "output": "sigmoid"}),
        ("steph", {"top_k": 2}),
        ("steph", {"sparse": False, "output": "softplus", "clamp_weights": True}),
        ("steph", {"top_k": 2, "mix": "fixed", "fixed_lambda": 0.0}),
        ("steph", {"top_k": 2, "mix": "global"}),
        ("steph", {"top_k": 2, "weights": "global"}),
    ],
)
def test_stacked_units_train_as_each_unit_alone(method: str, options: dict[str, object], device: str) -> None:
    """Every trained tensor, every epoch's loss and the training patients' predictions (ROUPKT's
    from the memo of training) of each unit equal its own ``fit`` run's."""
    where = torch.device(device)
    bags, data = cohort()
    splits = units(data)
    alone = [build(method, u, **options) for u in range(3)]
    alone_losses = [fit(m, d, bags, SETTINGS, device=where) for m, d in zip(alone, splits, strict=True)]

    together = [build(method, u, **options) for u in range(3)]
    stacked = MERGE_METHODS.get(method).stack(together)
    assert stacked is not None
    memos: list[BagMemo] = []
    losses = fit_stacked(stacked, splits, bags, SETTINGS, device=where, memos=memos)
    stacked.unstack(together)

    for mine, theirs, memo, split_ in zip(together, alone, memos, splits, strict=True):
        before = dict(build(method, 0, **options).named_parameters())
        for (name, value), (_, reference) in zip(
            mine.named_parameters(), theirs.named_parameters(), strict=True
        ):
            if name.endswith("attention_c.bias"):
                # the softmax ignores a shift of every score: its gradient is 0 up to rounding,
                # which AdamW's normalisation turns into steps of +-lr either way; no output moves
                continue
            if reference.requires_grad:
                assert not torch.equal(reference.cpu(), before[name]), f"{name} did not train"
            torch.testing.assert_close(value, reference, atol=1e-6, rtol=1e-5, msg=name)
        with using_memo(memo):
            mine_hazards, _ = predict(mine, split_.ids, bags, device=where)
        assert memo.stored("roupkt.experts") == (len(split_) if method == "roupkt" else 0)
        theirs_hazards, _ = predict(theirs, split_.ids, bags, device=where)
        torch.testing.assert_close(mine_hazards, theirs_hazards, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(alone_losses), atol=1e-6, rtol=1e-6)


def test_stacked_units_draw_their_own_dropout() -> None:
    """Without per-unit streams the units would share one stream and differ from alone runs:
    the test above would then fail; here, the masks of two identical units are identical."""
    bags, data = cohort()
    same = [split(data, list(range(0, 33)))] * 2
    together = [ada("adamerging", 0) for _ in range(2)]
    stacked = StackedAdaMerging(together)
    fit_stacked(stacked, same, bags, SETTINGS, device=CPU)
    torch.testing.assert_close(stacked.coefficients[0], stacked.coefficients[1], atol=1e-7, rtol=1e-6)


def test_units_that_cannot_train_together_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    bags, data = cohort()
    uneven = [split(data, list(range(0, 33))), split(data, list(range(0, 41)))]  # 4 and 5 steps
    assert "steps per epoch" in (stack_refusal(uneven, bags, SETTINGS, CPU) or "")
    with monkeypatch.context() as patch:  # what fp16 resolves to on a CUDA device
        patch.setattr(stacked, "resolve_precision", lambda requested, device: requested)
        fp16 = dataclasses.replace(SETTINGS, precision="fp16")
        assert "fp16" in (stack_refusal(units(data), bags, fp16, torch.device("cuda")) or "")
    small = dataclasses.replace(SETTINGS, max_batch_patches=100)
    assert "packs" in (stack_refusal(units(data), bags, small, CPU) or "")
    padded = dataclasses.replace(SETTINGS, max_batch_patches=-1)
    assert "padded" in (stack_refusal(units(data), bags, padded, CPU) or "")
    assert stack_refusal(units(data), bags, SETTINGS, CPU) is None
    with pytest.raises(ValueError, match="steps per epoch"):
        fit_stacked(StackedAdaMerging([ada("adamerging", 0)] * 2), uneven, bags, SETTINGS, device=CPU)


def test_steph_with_the_fnn_mix_head_trains_alone() -> None:
    """The ``fnn`` mix head embeds the patches a second time: its folds do not stack."""
    assert MERGE_METHODS.get("steph").stack([build("steph", u, top_k=2, mix="fnn") for u in range(2)]) is None


def test_models_that_differ_do_not_stack() -> None:
    with pytest.raises(ValueError, match="settings"):
        StackedAdaMerging([ada("adamerging", 0), ada("adamerging", 1, hypernet=True)])
    with pytest.raises(ValueError, match="settings"):
        StackedAdaMerging([ada("adamerging", 0), ada("adamerging", 1, gamma=0.5)])


def test_a_non_finite_loss_stops_the_stacked_run_for_the_caller_to_train_units_alone() -> None:
    """An infinite feature in one unit's bag: in a stacked step its NaN reaches the other units
    through shared products (0 x inf), so ``fit_stacked`` raises instead of returning them."""
    bags, data = cohort()
    splits = units(data)
    raw = {pid: bags.get(pid).clone() for pid in data.ids}
    raw[splits[2].ids[-1]][0, 0] = float("inf")  # a patient of the third unit only
    models = [build("adamerging", u) for u in range(3)]
    stacked = MERGE_METHODS.get("adamerging").stack(models)
    assert stacked is not None
    with pytest.raises(UnitsDiverged) as caught:
        fit_stacked(stacked, splits, BagStore.in_memory(raw), SETTINGS, device=CPU)
    assert 2 in caught.value.units and caught.value.epoch == 1
