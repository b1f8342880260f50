"""The bundle file format: round trip, and refusal of tampered, newer, foreign and pickled files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from steph.bundles.container import FORMAT_VERSION, part_sha256, read_bundle, write_bundle
from steph.errors import ConsistencyError, DataError, MissingArtifactError
from steph.fileio import sha256_bytes


def _parts() -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return {
        "theta0": {"a.weight": torch.randn(3, 4, generator=gen), "a.bias": torch.randn(3, generator=gen)},
        "task_vector/BRCA/fold_0": {"a.weight": torch.randn(3, 4, generator=gen)},
    }


def _write(tmp_path: Path, kind: str = "model") -> Path:
    path = tmp_path / "b.safetensors"
    write_bundle(path, kind, _parts(), {"target": "BRCA", "note": "x"})
    return path


def _rewrite(path: Path, *, tensors=None, meta=None) -> None:
    """Re-save the file with changed tensors or metadata, as an editor of the file would."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        old_meta = dict(fh.metadata())
    save_file(tensors or load_file(str(path)), str(path), metadata=meta or old_meta)


def test_round_trip_keeps_every_tensor_and_the_card(tmp_path: Path) -> None:
    bundle = read_bundle(_write(tmp_path))
    assert bundle.kind == "model" and bundle.card["target"] == "BRCA"
    assert bundle.card["format_version"] == FORMAT_VERSION
    for name, state in _parts().items():
        assert bundle.parts[name].keys() == state.keys()
        for key, value in state.items():
            assert torch.equal(bundle.parts[name][key], value)
        assert bundle.card["parts"][name]["sha256"] == part_sha256(state)


def test_part_hash_sees_values_names_dtypes_and_shapes_but_not_order() -> None:
    state = {"x": torch.arange(6.0).reshape(2, 3), "y": torch.ones(2)}
    same = {"y": torch.ones(2), "x": torch.arange(6.0).reshape(2, 3)}
    assert part_sha256(state) == part_sha256(same)
    for changed in (
        {**state, "y": torch.tensor([1.0, 1.0000001])},
        {**state, "x": state["x"].reshape(3, 2)},
        {**state, "y": torch.ones(2, dtype=torch.float64)},
        {"z": state["x"], "y": state["y"]},
    ):
        assert part_sha256(changed) != part_sha256(state)


def test_a_changed_tensor_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path)
    tensors = load_file(str(path))
    tensors["theta0::a.bias"] = tensors["theta0::a.bias"] + 1e-3
    _rewrite(path, tensors=tensors)
    with pytest.raises(ConsistencyError, match=r"sha256 mismatch: theta0.*modified after export"):
        read_bundle(path)


def test_an_added_or_removed_part_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path)
    tensors = load_file(str(path))
    _rewrite(path, tensors={**tensors, "extra::w": torch.zeros(1)})
    with pytest.raises(ConsistencyError, match="not in the card: extra"):
        read_bundle(path)
    _rewrite(path, tensors={k: v for k, v in tensors.items() if not k.startswith("task_vector/")})
    with pytest.raises(ConsistencyError, match="missing: task_vector/BRCA/fold_0"):
        read_bundle(path)


def test_an_edited_card_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
    card = json.loads(meta["card"])
    card["train_median_risk"] = -1.0
    _rewrite(path, meta={**meta, "card": json.dumps(card, sort_keys=True)})
    with pytest.raises(ConsistencyError, match="model card was modified"):
        read_bundle(path)


def test_a_newer_format_version_is_refused_with_the_upgrade(tmp_path: Path) -> None:
    path = _write(tmp_path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
    card = json.loads(meta["card"])
    card["format_version"] = FORMAT_VERSION + 1
    text = json.dumps(card, sort_keys=True)
    newer = {
        **meta,
        "format_version": str(FORMAT_VERSION + 1),
        "card": text,
        "card_sha256": sha256_bytes(text.encode()),
    }
    _rewrite(path, meta=newer)
    with pytest.raises(ConsistencyError, match=f"format version {FORMAT_VERSION + 1}, newer") as info:
        read_bundle(path)
    assert "upgrade stephctl" in (info.value.hint or "")


def test_foreign_files_are_refused_and_pickles_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    pickled = tmp_path / "model.safetensors"
    pickled.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(DataError, match="not a stephctl bundle"):
        read_bundle(pickled)
    assert not marker.exists()
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(DataError, match="not a stephctl bundle"):
        read_bundle(plain)
    with pytest.raises(MissingArtifactError, match="bundle not found"):
        read_bundle(tmp_path / "nothing.safetensors")


def test_a_bundle_of_the_other_kind_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, kind="sources")
    with pytest.raises(DataError, match="is a sources bundle, not a model bundle") as info:
        read_bundle(path, kind="model")
    assert "import-sources" in (info.value.hint or "")
