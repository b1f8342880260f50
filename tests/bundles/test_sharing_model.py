"""Model bundles with valid hashes and crafted content (issue #32, items 5 and 10).

Each bundle is re-signed (tests/_crafted_bundles.py): the hashes match, so only a check of what
the bundle says and holds can refuse it. Before these checks such bundles predicted NaN risks,
put every patient in "low", wrote a broken survival CSV or died with a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _crafted_bundles import model_bundle_parts

from steph.bundles.container import write_bundle
from steph.bundles.model import load_bundle_model
from steph.errors import DataError

CPU = torch.device("cpu")


def _nan_weights(parts, card) -> None:
    parts["weights/fold_0"] = {**parts["weights/fold_0"], "pred_head.bias": torch.full((8,), float("nan"))}


def _wrong_shape(parts, card) -> None:
    parts["weights/fold_0"] = {**parts["weights/fold_0"], "pred_head.weight": torch.zeros(5, 16)}


def _huge_dims(parts, card) -> None:
    card["models"][0]["model_config"]["dim_emb"] = 10**8
    card["models"][0]["dim_in"] = 10**8


@pytest.mark.parametrize(
    ("method", "edit", "match"),
    [
        ("cancer-specific", _nan_weights, "not finite"),
        ("steph", _nan_weights, "not finite"),
        ("cancer-specific", lambda p, c: c.update(train_median_risk=float("nan")), "train_median_risk"),
        ("cancer-specific", lambda p, c: c["time_bins"].update(count=5), "time_bins.count"),
        ("cancer-specific", lambda p, c: c["time_bins"].update(width_days=-1), "width_days"),
        ("cancer-specific", lambda p, c: c.update(models=[]), "at least one fold"),
        ("cancer-specific", _huge_dims, "dim_in"),
        ("cancer-specific", _wrong_shape, r"pred_head\.weight \[5, 16\]"),
        ("steph", lambda p, c: c["models"][0]["settings"]["options"].update(top_k=5), "top-k is 5"),
        (
            "steph",
            lambda p, c: c["models"][0]["source_vectors"].update(KIRC="task_vector/KIRC/fold_0"),
            "KIRC",
        ),
        ("cancer-specific", lambda p, c: c["encoder"].update(dim=64), "encoder.dim"),
    ],
    ids=[
        "nan-weights",
        "nan-merged-weights",
        "nan-median",
        "bins-count",
        "bins-width",
        "no-models",
        "huge-dims",
        "wrong-shape",
        "top-k",
        "missing-part",
        "encoder-dim",
    ],
)
def test_a_re_signed_model_bundle_is_checked_for_content(tmp_path: Path, method, edit, match) -> None:
    parts, card = model_bundle_parts(method)
    edit(parts, card)
    path = tmp_path / "m.safetensors"
    write_bundle(path, "model", parts, card)
    with pytest.raises(DataError, match=match):
        load_bundle_model(path, device=CPU)


@pytest.mark.parametrize("method", ["cancer-specific", "steph"])
def test_an_intact_crafted_bundle_loads(tmp_path: Path, method: str) -> None:
    parts, card = model_bundle_parts(method)
    write_bundle(tmp_path / "m.safetensors", "model", parts, card)
    model = load_bundle_model(tmp_path / "m.safetensors", device=CPU)
    assert model.time_bins == 8 and model.dim_in == 128 and model.train_median_risk == -4.0
