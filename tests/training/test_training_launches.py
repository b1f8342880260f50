"""Operators dispatched per optimiser step do not grow with the number of bags in the step.

Counted with a dispatch-mode counter over forward and backward of one step, on the code path CUDA
takes (packs up to the patch budget, per-bag encoders as grouped products), run on CPU tensors.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from steph.config import MergeConfig, ModelConfig
from steph.merging import MERGE_METHODS, MergeContext
from steph.merging.adamerging import AdaMergingModel
from steph.models.abmil import create_abmil
from steph.training.loop import FitSettings, backward_chunks, load_chunks

DIM, MODEL = 16, ModelConfig(dim_emb=8, dim_attn=8)
SOURCES = ("BLCA", "LUNG", "KIPAN", "SKCM")


class DispatchCounter(TorchDispatchMode):
    """Counts every ATen operator dispatched inside the block (forward, backward, copies)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


def state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in create_abmil(DIM, MODEL).state_dict().items()}


def vector(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.1 * torch.randn(v.shape, generator=g) for k, v in state(0).items()}


def build(name: str) -> torch.nn.Module:
    if name == "train-source":
        torch.manual_seed(0)
        return create_abmil(DIM, MODEL)
    sources = tuple(vector(i) for i in range(len(SOURCES)))
    if name == "adamerging-hypernet":
        return AdaMergingModel(
            state(0),
            [vector(100), *sources],
            dim_in=DIM,
            dim_emb=8,
            time_bins=32,
            dropout=0.25,
            gamma=0.005,
            hypernet=True,
        )
    ctx = MergeContext(
        target="BRCA",
        fold=0,
        theta0=state(0),
        target_vector=vector(100),
        source_names=SOURCES,
        source_vectors=sources,
        config=MergeConfig(options={"top_k": 2}),
        model_config=MODEL,
        dim_in=DIM,
        device=torch.device("cpu"),
        seed=42,
        fit_settings=FitSettings(epochs=1),
        train=None,
        bags=None,
    )
    return MERGE_METHODS.get(name).build(ctx)


def operators_per_step(model: torch.nn.Module, n_bags: int) -> int:
    g = torch.Generator().manual_seed(n_bags)
    bags = [torch.randn(int(k), DIM, generator=g) for k in torch.randint(3, 40, (n_bags,), generator=g)]
    bins = torch.randint(0, 8, (n_bags,), generator=g)
    events = torch.arange(n_bags) % 2
    budget = 1 << 20
    parts = load_chunks(bags, bins, events, budget, share=True, pack=True, pack_limit=budget)
    model.train()
    with DispatchCounter() as counter:
        backward_chunks(model, parts, FitSettings(epochs=1), device=torch.device("cpu"), budget=budget)
    return counter.count


@pytest.mark.parametrize("name", ["train-source", "steph", "roupkt", "adamerging", "adamerging-hypernet"])
def test_operators_per_step_do_not_grow_with_the_number_of_bags(name: str) -> None:
    model = build(name)
    assert getattr(model, "packs_bags", False)
    few, many = operators_per_step(model, 16), operators_per_step(model, 64)
    assert few == many, f"{name}: {few} operators for 16 bags, {many} for 64"


def test_per_bag_weights_in_a_pack_equal_each_bag_alone_with_and_without_the_grouped_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """STEPH's per-bag encoders packed: one grouped product, or (no kernel) bag by bag: the same
    embeddings and gradients as each bag alone."""
    from steph.models import abmil

    g = torch.Generator().manual_seed(5)
    sizes = [3, 9, 1, 14]
    bags = [torch.randn(k, DIM, generator=g) for k in sizes]
    shapes = {k: v.shape for k, v in state(0).items() if k in abmil.ENCODER_KEYS}
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


def test_a_train_source_step_stays_within_its_operator_budget() -> None:
    """Host overhead at 16 bags: SurvMLE's closed-form gradient (one backward operator instead
    of about seventy) and the encoder's parameters read off its attributes keep ABMIL's step at
    161 operators (206 before)."""
    assert operators_per_step(build("train-source"), 16) <= 165
