"""Task-vector preprocessing shared by merge units of one process (``merge --paper`` runs a target
fold's Iso-C AM and TIES AM rows with and without a hypernetwork one after the other): computed
once for the same vectors and settings, anew otherwise, and equal to a fresh computation."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

import pytest
import torch
from _merge_helpers import context

from steph.merging import MERGE_METHODS, adamerging, once
from steph.merging.base import MergeContext
from steph.models.abmil import ENCODER_KEYS


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Counts of the pairwise preprocessing, with an empty store of kept results."""
    monkeypatch.setattr(once, "_KEPT", OrderedDict())
    counted: dict[str, list[int]] = {"iso": [], "ties": []}
    real_iso, real_ties = adamerging.iso_pairwise, adamerging.pairwise_with_target

    def iso(*args: Any, **kwargs: Any) -> Any:
        counted["iso"].append(1)
        return real_iso(*args, **kwargs)

    def ties(*args: Any, **kwargs: Any) -> Any:
        counted["ties"].append(1)
        return real_ties(*args, **kwargs)

    monkeypatch.setattr(adamerging, "iso_pairwise", iso)
    monkeypatch.setattr(adamerging, "pairwise_with_target", ties)
    return counted


def _vectors(method: str, ctx: MergeContext) -> list[dict[str, torch.Tensor]]:
    return MERGE_METHODS.get(method).vectors(ctx)  # type: ignore[attr-defined, no-any-return]


def _equal(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in ENCODER_KEYS
    )


def test_the_rows_of_a_fold_share_their_preprocessing(calls: dict[str, list[int]]) -> None:
    ctx = dataclasses.replace(context(3), vector_hashes=("t", "s0", "s1", "s2"))
    iso_plain = _vectors("iso-c-adamerging", ctx)
    iso_hyper = _vectors(
        "iso-c-adamerging", dataclasses.replace(ctx, config=context(3, hypernet=True).config)
    )
    ties_plain = _vectors("ties-adamerging", ctx)
    ties_again = _vectors("ties-adamerging", ctx)
    assert (len(calls["iso"]), len(calls["ties"])) == (1, 1)
    assert _equal(iso_plain, iso_hyper) and _equal(ties_plain, ties_again)
    unknown = dataclasses.replace(ctx, vector_hashes=())  # no identity: computed every time
    assert _equal(_vectors("iso-c-adamerging", unknown), iso_plain)
    assert len(calls["iso"]) == 2


def test_other_vectors_or_settings_are_computed_anew(calls: dict[str, list[int]]) -> None:
    ctx = dataclasses.replace(context(3), vector_hashes=("t", "s0", "s1", "s2"))
    first = _vectors("iso-c-adamerging", ctx)
    moved = dataclasses.replace(
        ctx,
        target_vector={k: v + 0.01 for k, v in ctx.target_vector.items()},
        vector_hashes=("t2", "s0", "s1", "s2"),
    )
    second = _vectors("iso-c-adamerging", moved)
    fresh = _vectors("iso-c-adamerging", dataclasses.replace(moved, vector_hashes=()))
    assert len(calls["iso"]) == 3 and _equal(second, fresh) and not _equal(first, second)
    _vectors("ties-adamerging", ctx)
    _vectors("ties-adamerging", dataclasses.replace(ctx, config=context(3, density=0.5).config))
    assert len(calls["ties"]) == 2
    assert len(once._KEPT) == once.KEPT  # the oldest were dropped
