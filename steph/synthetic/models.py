"""Tiny models with random weights: ABMIL and every merge method, built without a project.

For the tests and benchmarks that measure a model rather than what it learned (operators per
step in ``benchmarks/bench_host.py``, FLOPs against PyTorch's counter): theta0 is a seeded ABMIL,
the task vectors ``0.1 N(0, 1)`` per parameter, and a merged model is built by its method from a
:class:`~steph.merging.MergeContext` with no training data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..config import MergeConfig, ModelConfig
from ..data import BagStore
from ..merging import MERGE_METHODS, MergeContext
from ..models.abmil import create_abmil
from ..survival import SurvivalTargets
from ..training.loop import FitSettings

StateDict = dict[str, torch.Tensor]

TINY = ModelConfig(dim_emb=8, dim_attn=8)
"""ABMIL widths 8 and 8: a step's arithmetic is about zero, so its time is the host's."""
SOURCES = ("BLCA", "LUNG", "KIPAN", "SKCM")
TRAIN_SOURCE = "train-source"
"""The name :func:`tiny_model` gives the plain ABMIL of ``stephctl train-source``."""


def abmil_state(dim_in: int, model: ModelConfig = TINY, *, seed: int = 0) -> StateDict:
    """The parameters of ``create_abmil(dim_in, model)`` under ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in create_abmil(dim_in, model).state_dict().items()}


def random_vectors(theta0: Mapping[str, torch.Tensor], count: int, *, seed: int = 1) -> list[StateDict]:
    """``count`` task vectors shaped like ``theta0``, each entry ``0.1 N(0, 1)``, drawn in turn
    from one generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return [{k: 0.1 * torch.randn(v.shape, generator=g) for k, v in theta0.items()} for _ in range(count)]


def merge_context(
    dim_in: int,
    model: ModelConfig = TINY,
    *,
    sources: Sequence[str] = SOURCES,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> MergeContext:
    """Target BRCA fold 0 on CPU: theta0 :func:`abmil_state` (seed 0), the target's and the
    sources' vectors :func:`random_vectors` (target first), ``merge.options`` ``options``, no
    training data (what rebuilding a trained model gives a method's ``build``)."""
    theta0 = abmil_state(dim_in, model)
    vectors = random_vectors(theta0, 1 + len(sources))
    return MergeContext(
        target="BRCA",
        fold=0,
        theta0=theta0,
        target_vector=vectors[0],
        source_names=tuple(sources),
        source_vectors=tuple(vectors[1:]),
        config=MergeConfig(options=dict(options or {})),
        model_config=model,
        dim_in=dim_in,
        device=torch.device("cpu"),
        seed=seed,
        fit_settings=FitSettings(epochs=1),
    )


def tiny_model(
    name: str,
    dim_in: int,
    model: ModelConfig = TINY,
    *,
    sources: Sequence[str] = SOURCES,
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """The untrained module of ``name``: :data:`TRAIN_SOURCE` (ABMIL, seed 0) or a merge method
    built from :func:`merge_context`.

    Raises:
        UnknownNameError: ``name`` is neither.
    """
    if name == TRAIN_SOURCE:
        torch.manual_seed(0)
        return create_abmil(dim_in, model)
    return MERGE_METHODS.get(name).build(merge_context(dim_in, model, sources=sources, options=options))


def unit_splits(
    bags: Sequence[torch.Tensor], bins: torch.Tensor, events: torch.Tensor, units: int
) -> tuple[BagStore, list[SurvivalTargets]]:
    """``bags`` (with their ``bins`` and ``events``) as an in-memory store of patients ``P0``,
    ``P1`` ... and ``units`` training splits of as many consecutive patients each, one per unit
    trained together (:mod:`steph.training.stacked`); times are zeros (training reads the bins)."""
    store = BagStore.in_memory({f"P{i}": bag for i, bag in enumerate(bags)})
    per = len(bags) // units
    ids = [f"P{i}" for i in range(len(bags))]
    return store, [
        SurvivalTargets(
            ids[u * per : (u + 1) * per],
            torch.zeros(per),
            events[u * per : (u + 1) * per],
            bins[u * per : (u + 1) * per],
        )
        for u in range(units)
    ]
