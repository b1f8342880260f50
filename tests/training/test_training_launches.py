"""Operators dispatched per optimiser step do not grow with the number of bags in the step.

Counted with a dispatch-mode counter over forward and backward of one step, on the code path CUDA
takes (packs up to the patch budget, per-bag encoders as grouped products), run on CPU tensors.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch

from steph.models.dispatch import DispatchCounter
from steph.synthetic.models import TINY as MODEL
from steph.synthetic.models import abmil_state, tiny_model, unit_splits
from steph.training.loop import FitSettings, backward_chunks, fit, load_chunks
from steph.training.memo import bag_memo
from steph.training.optim import build_optimizer

DIM = 16


def build(name: str) -> torch.nn.Module:
    if name == "adamerging-hypernet":
        return tiny_model("adamerging", DIM, MODEL, options={"hypernet": True})
    return tiny_model(name, DIM, MODEL, options={"top_k": 2})


def operators_per_step(model: torch.nn.Module, n_bags: int, memo: bool = False) -> int:
    """Operators of the second of two identical steps; with ``memo``, inside a bag memo of the
    step's bags (the first step fills it: ROUPKT's frozen experts are then read, as in every
    epoch after a fit's first)."""
    g = torch.Generator().manual_seed(n_bags)
    bags = [torch.randn(int(k), DIM, generator=g) for k in torch.randint(3, 40, (n_bags,), generator=g)]
    bins = torch.randint(0, 8, (n_bags,), generator=g)
    events = torch.arange(n_bags) % 2
    budget = 1 << 20
    positions = list(range(n_bags)) if memo else None
    parts = load_chunks(
        bags, bins, events, budget, share=True, pack=True, pack_limit=budget, positions=positions
    )
    model.train()
    optimizer = build_optimizer(list(model.named_parameters()), lr=1e-4, weight_decay=1e-5)
    with bag_memo(n_bags) if memo else contextlib.nullcontext():
        for _ in range(2):  # the optimiser's first step creates its moments: the second is counted
            optimizer.zero_grad(set_to_none=True)  # as every step of fit
            with DispatchCounter() as counter:
                backward_chunks(
                    model, parts, FitSettings(epochs=1), device=torch.device("cpu"), budget=budget
                )
                optimizer.step()
    return counter.count


@pytest.mark.parametrize("name", ["train-source", "steph", "roupkt", "adamerging", "adamerging-hypernet"])
def test_operators_per_step_do_not_grow_with_the_number_of_bags(name: str) -> None:
    model = build(name)
    assert getattr(model, "packs_bags", False)
    few, many = operators_per_step(model, 16), operators_per_step(model, 64)
    assert few == many, f"{name}: {few} operators for 16 bags, {many} for 64"


def stacked_operators_per_step(name: str, units: int, n_bags: int) -> int:
    """Operators of the second of two identical steps of ``units`` stacked units of ``name``
    (:func:`~steph.training.stacked.fit_stacked`'s step), ``n_bags`` bags each, in a bag memo."""
    from steph.merging import MERGE_METHODS
    from steph.models.dropout import UnitStreams
    from steph.training.loop import label_spec
    from steph.training.stacked import backward_step, load_step
    from steph.training.staging import DeviceStager

    cpu = torch.device("cpu")
    stacked = MERGE_METHODS.get(name).stack([build(name) for _ in range(units)])
    assert stacked is not None
    g = torch.Generator().manual_seed(n_bags)
    total = units * n_bags
    bags = [torch.randn(int(k), DIM, generator=g) for k in torch.randint(3, 40, (total,), generator=g)]
    store, data = unit_splits(
        bags, torch.randint(0, 8, (total,), generator=g), torch.arange(total) % 2, units
    )
    spec = label_spec(stacked, FitSettings(epochs=1))
    assert spec is not None
    stager = DeviceStager(cpu)
    (part,) = stager.claim(load_step(store, data, [list(range(n_bags))] * units, stager, spec, 1 << 20))
    stacked.train()
    optimizer = build_optimizer(list(stacked.named_parameters()), lr=1e-4, weight_decay=1e-5, stacked=True)
    streams = UnitStreams(units, cpu)
    with bag_memo(total):
        for _ in range(2):
            optimizer.zero_grad(set_to_none=True)
            with DispatchCounter() as counter:
                backward_step(stacked, part, units, streams, "fp32", 1 << 20, cpu)
                optimizer.step()
    return counter.count


@pytest.mark.parametrize("name", ["steph", "roupkt", "adamerging"])
def test_stacked_units_take_operators_that_do_not_grow_with_their_bags(name: str) -> None:
    """A step of stacked units (a target's folds, :mod:`steph.training.stacked`): the same
    operators for 16 or 64 bags a unit; each more unit adds only its dropout draws, so 5 units
    take far fewer operators than 5 steps of one."""
    count = {(u, n): stacked_operators_per_step(name, u, n) for u, n in ((2, 16), (2, 64), (1, 16), (5, 16))}
    assert count[2, 16] == count[2, 64], (
        f"{name}: {count[2, 16]} operators for 16 bags a unit, {count[2, 64]} for 64"
    )
    alone = operators_per_step(build(name), 16, memo=True)
    per_unit = (count[5, 16] - count[2, 16]) / 3
    assert per_unit <= count[2, 16] - count[1, 16] and per_unit < alone / 5, (name, count, alone)


@pytest.mark.parametrize("name", ["steph", "roupkt"])
def test_operators_per_step_do_not_grow_with_the_number_of_sources(name: str) -> None:
    """4 or 12 sources (the paper's 13 cancers): the same operators a step, once ROUPKT's frozen
    experts come from the bag memo (every epoch after a fit's first); its expert MLPs are two
    stacked parameters, not one Linear layer per expert."""
    counts = []
    for sources in (4, 12):
        model = tiny_model(name, DIM, MODEL, sources=[f"S{i}" for i in range(sources)], options={"top_k": 2})
        counts.append(operators_per_step(model, 16, memo=True))
    assert counts[0] == counts[1], f"{name}: {counts[0]} operators with 4 sources, {counts[1]} with 12"


def test_per_bag_weights_in_a_pack_equal_each_bag_alone_with_and_without_the_grouped_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """STEPH's per-bag encoders packed: one grouped product, or (no kernel) bag by bag: the same
    embeddings and gradients as each bag alone."""
    from steph.models import abmil

    g = torch.Generator().manual_seed(5)
    sizes = [3, 9, 1, 14]
    bags = [torch.randn(k, DIM, generator=g) for k in sizes]
    shapes = {k: v.shape for k, v in abmil_state(DIM, MODEL).items() if k in abmil.ENCODER_KEYS}
    per_bag = {
        k: (0.3 * torch.randn(len(sizes), *s, generator=g)).requires_grad_() for k, s in shapes.items()
    }

    def run(packed: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if packed:
            with abmil.packed_bags(sizes):
                z = abmil.encode(per_bag, torch.cat(bags).unsqueeze(0))
        else:
            z = torch.cat(
                [
                    abmil.encode({k: v[b : b + 1] for k, v in per_bag.items()}, x.unsqueeze(0))
                    for b, x in enumerate(bags)
                ]
            )
        grads = torch.autograd.grad(
            (z * torch.linspace(-1, 1, z.numel()).view_as(z)).sum(), list(per_bag.values())
        )
        return z.detach(), list(grads)

    alone = run(False)
    calls: list[int] = []
    real = torch.nn.functional.grouped_mm

    def counting(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "grouped_mm", counting)
    grouped = run(True)
    assert calls  # the kernel ran (D = 16, widths 8: aligned)

    def broken(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise RuntimeError("no kernel")

    monkeypatch.setattr(torch.nn.functional, "grouped_mm", broken)
    monkeypatch.setattr(abmil, "_GROUPED_FAILED", False)
    fallback = run(True)
    assert abmil._GROUPED_FAILED
    for z, grads in (grouped, fallback):
        assert torch.allclose(z, alone[0], atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, alone[1], strict=True))


BUDGETS = {"train-source": 147, "steph": 283, "roupkt": 316, "adamerging": 167}
"""Operators of one 16-bag optimiser step, the update included (labels built in the step,
ROUPKT's experts recomputed: no bag memo), counted 2026-12-07 with ROUPKT's expert MLPs
stacked, the merged encoders' biases and per-bag coefficients not reshaped to their own shape,
SurvMLE's columns in one gather and STEPH's regulariser with its closed-form gradient: 146,
316, 314, 178; AdaMerging 165 since its regulariser has its closed-form gradient too and its
one merged encoder is a matrix-vector product, STEPH 281 since its hypernetwork's two heads are
one stacked pair (before these changes 149, 353, 341, 189: ROUPKT's Linear layer per expert took
24 with its 5 experts; before the fused AdamW 153, 357, 345, 193). The update is 4 operators (two fused AdamW
kernels and their step counts; 8 multi-tensor, 75 to 158 with one set of operators per
parameter). Forward and backward alone before the fused AdamW: 145, 349, 337, 185 (206, 445,
442, 267 five changes before that). On CPU
tensors a dropout mask of 2,048 elements or more is drawn by ``steph.models.dropout`` in 7
operators where torch's takes 4 (on CUDA it is torch's fused kernel, 1), and the step does not
read its loss back."""


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_a_step_stays_within_its_operator_budget(name: str) -> None:
    """Host overhead at 16 bags: SurvMLE from the logits with its closed-form gradient, the
    merged encoders cut by one split, ROUPKT's experts as one batched product, the packs'
    column indices and mean weights built with the pack, the encoder's parameters read off its
    attributes."""
    assert operators_per_step(build(name), 16) <= BUDGETS[name]


@pytest.mark.parametrize("name", ["train-source", "steph"])
def test_fit_reads_the_device_once_per_epoch_not_per_step(name: str) -> None:
    """No step waits for the device: the training thread reads a tensor's value (a host sync on
    CUDA) once per epoch, the epoch's summed loss, whatever the number of steps."""
    from steph.data import BagStore
    from steph.survival import SurvivalTargets, time_to_bin

    g = torch.Generator().manual_seed(3)
    ids = [f"p{i}" for i in range(32)]
    bags = BagStore.in_memory(
        {
            pid: torch.randn(int(k), DIM, generator=g)
            for pid, k in zip(ids, torch.randint(3, 30, (len(ids),), generator=g), strict=True)
        }
    )
    times = torch.rand(len(ids), generator=g, dtype=torch.float64) * 5000
    data = SurvivalTargets(ids, times, torch.arange(len(ids)) % 2, time_to_bin(times))
    reads = {}
    for batch_size in (16, 4):  # 2 and 8 steps an epoch
        with DispatchCounter() as counter:
            losses = fit(
                build(name),
                data,
                bags,
                FitSettings(epochs=3, batch_size=batch_size),
                device=torch.device("cpu"),
            )
        reads[batch_size] = counter.by_name["_local_scalar_dense.default"] + counter.by_name["item.default"]
        assert len(losses) == 3 and all(loss == loss for loss in losses)
    assert reads == {16: 3, 4: 3}
