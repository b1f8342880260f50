"""Pairwise Iso-C / Iso-CTS results are computed once per process for the same task vectors
(``merge --paper`` runs its two Iso-C rows one after the other on every target fold)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
import torch

from steph.merging import iso
from steph.models.abmil import ENCODER_KEYS
from steph.synthetic.models import TINY, abmil_state


def _vectors(seed: int, n: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    state = abmil_state(16, TINY)
    return [{k: 0.1 * torch.randn(state[k].shape, generator=g) for k in ENCODER_KEYS} for _ in range(n)]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    monkeypatch.setattr(iso, "_PAIRWISE", OrderedDict())
    calls: list[int] = []
    real = iso.iso_merge

    def counting(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(iso, "iso_merge", counting)
    return calls


def test_the_same_vectors_are_merged_once(counted: list[int]) -> None:
    vectors = _vectors(0)
    first = iso.iso_pairwise(vectors[0], vectors, ENCODER_KEYS, "iso-c", identity=("a", "b", "c"))
    assert len(counted) == 3
    again = iso.iso_pairwise(vectors[0], vectors, ENCODER_KEYS, "iso-c", identity=("a", "b", "c"))
    assert len(counted) == 3  # from the cache
    fresh = iso.iso_pairwise(vectors[0], vectors, ENCODER_KEYS, "iso-c")  # no identity: computed
    assert len(counted) == 6
    for a, b, c in zip(first, again, fresh, strict=True):
        assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in ENCODER_KEYS)


def test_other_vectors_kind_or_fraction_are_merged_anew(counted: list[int]) -> None:
    vectors, others = _vectors(0), _vectors(1)
    iso.iso_pairwise(vectors[0], vectors, ENCODER_KEYS, "iso-c", identity=("a", "b", "c"))
    result = iso.iso_pairwise(others[0], others, ENCODER_KEYS, "iso-c", identity=("a", "b", "d"))
    expected = iso.iso_pairwise(others[0], others, ENCODER_KEYS, "iso-c")
    assert all(torch.equal(r[k], e[k]) for r, e in zip(result, expected, strict=True) for k in ENCODER_KEYS)
    iso.iso_pairwise(vectors[0], vectors, ENCODER_KEYS, "iso-cts", 0.8, identity=("a", "b", "c"))
    iso.iso_pairwise(vectors[0], vectors, ENCODER_KEYS, "iso-cts", 0.5, identity=("a", "b", "c"))
    assert len(counted) == 3 * 5
    assert len(iso._PAIRWISE) == iso.PAIRWISE_KEPT  # the oldest were dropped
