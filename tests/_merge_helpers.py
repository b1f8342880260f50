"""Small in-memory inputs for merge-method tests: theta0, task vectors, bags, a MergeContext."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from steph.config import MergeConfig, ModelConfig
from steph.data import BagStore
from steph.merging import MergeContext
from steph.models.abmil import create_abmil
from steph.survival import SurvivalTargets
from steph.training.loop import FitSettings

DIM = 6
MODEL = ModelConfig(dim_emb=8, dim_attn=4)
SOURCES = ("BLCA", "LUNG", "KIPAN", "SKCM")


def abmil_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in create_abmil(DIM, MODEL).state_dict().items()}


def task_vector(seed: int, scale: float = 0.1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: scale * torch.randn(v.shape, generator=g) for k, v in abmil_state(0).items()}


def bags(n: int = 5, seed: int = 7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"P{i}": torch.randn(3 + 2 * i, DIM, generator=g) for i in range(n)}


def merge_config(**merge: Any) -> MergeConfig:
    """A ``MergeConfig``: its own fields as given, every other keyword a method setting
    (``merge.options``; ``options=`` adds more)."""
    fields = {f.name for f in dataclasses.fields(MergeConfig)}
    options = {**{k: v for k, v in merge.items() if k not in fields}, **merge.get("options", {})}
    return MergeConfig(**{k: v for k, v in merge.items() if k in fields and k != "options"}, options=options)


def context(n_sources: int = 4, *, with_data: bool = False, **merge: Any) -> MergeContext:
    """A context over theta0 = abmil_state(0), tau_t = task_vector(100), tau_s_i = task_vector(i)."""
    train = store = None
    if with_data:
        data = bags(8)
        store = BagStore.in_memory(data)
        times = torch.linspace(100, 3000, len(data), dtype=torch.float64)
        train = SurvivalTargets(
            ids=list(data),
            times=times,
            events=torch.tensor([1, 0] * (len(data) // 2)),
            bins=(times / 365).long(),
        )
    return MergeContext(
        target="BRCA",
        fold=0,
        theta0=abmil_state(0),
        target_vector=task_vector(100),
        source_names=SOURCES[:n_sources],
        source_vectors=tuple(task_vector(i) for i in range(n_sources)),
        config=merge_config(**merge),
        model_config=MODEL,
        dim_in=DIM,
        device=torch.device("cpu"),
        seed=42,
        fit_settings=FitSettings(epochs=1, batch_size=4),
        train=train,
        bags=store,
    )
