"""`predict` with slides from outside (issue #32, items 6 and 13).

- Features are reused only when made from the very slide file (recorded resolved path, size and
  modification time): before the fix a different image under the same file name got the old
  slide's risk, with exit 0.
- A bundle naming a hub encoder (``timm:...``) makes predict download nothing unless
  ``--allow-download`` is given; before the fix the weights were fetched from the hub.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from _crafted_bundles import model_bundle_parts
from _slides import write_slide

from steph.bundles.container import write_bundle
from steph.fileio import read_csv

EXTRACTION = {
    "patch_size": 64,
    "target_mpp": 0.5,
    "batch_size": 16,
    "tissue": {"thumbnail_mpp": 2.0, "min_object_um2": 500.0, "max_hole_um2": 500.0},
}


def _bundle(path: Path, **encoder: object) -> Path:
    card_encoder = {"patch_size": 64, "target_mpp": 0.5, "extraction": EXTRACTION, **encoder}
    parts, card = model_bundle_parts(dim_in=int(encoder.get("dim", 128)), encoder=card_encoder)
    write_bundle(path, "model", parts, card)
    return path


def _risk(run: Path) -> str:
    return read_csv(run / "predictions.csv")[0]["risk"]


def test_another_image_under_the_same_name_is_extracted_again(tmp_path: Path, cli) -> None:
    bundle = _bundle(tmp_path / "m.safetensors")
    slide = write_slide(tmp_path / "new" / "S1.tiff", 0.5, seed=0)
    run = tmp_path / "run"
    first = cli("-p", tmp_path / "p", "predict", slide, "--model", bundle, "--out", run, "--json")
    assert first.exit_code == 0, first.output
    before = _risk(run)
    write_slide(slide, 0.5, seed=1, colour=(90, 40, 160), blocks_um=((32, 32, 480, 352),))
    stat = slide.stat()
    os.utime(slide, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = cli("-p", tmp_path / "p", "predict", slide, "--model", bundle, "--out", run, "--overwrite")
    assert again.exit_code == 0, again.output
    assert _risk(run) != before


def test_a_bundle_naming_a_hub_encoder_downloads_nothing_unless_asked(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import timm

    import steph.extractors.weights as weights

    for var in ("HF_HUB_OFFLINE", "STEPHCTL_NO_HUB"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(weights.socket, "create_connection", lambda *a, **k: socket.socket())  # "reachable"
    downloads: list[str] = []
    original = timm.create_model

    def create_model(name: str, pretrained: bool = False, **kwargs: object):
        if pretrained:
            downloads.append(name)
            raise OSError("the test forbids downloads")
        return original(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_model)
    bundle = _bundle(
        tmp_path / "m.safetensors", name="timm:resnet18", weights="timm:resnet18 pretrained", dim=512
    )
    slide = write_slide(tmp_path / "new" / "S1.tiff", 0.5)
    result = cli("-p", tmp_path / "p", "predict", slide, "--model", bundle, "--out", tmp_path / "run")
    assert downloads == []
    assert result.exit_code == 1, result.output
    assert "--allow-download" in result.stderr and "timm:resnet18" in result.stderr
    allowed = cli(
        "-p",
        tmp_path / "p",
        "predict",
        slide,
        "--model",
        bundle,
        "--out",
        tmp_path / "r2",
        "--allow-download",
    )
    assert downloads == ["resnet18"], allowed.output


def test_feature_files_are_checked_against_the_model_and_max_patches_before_they_are_read(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #32: predict bounds a feature file by its header before reading its values: its D
    must be the model's (dim_in 128 here) and its patch count at most ``max_patches`` (of
    stephctl.yaml, or ``--max-patches``). Before the fix every file was read whole (any D, any
    size), and ``max_patches`` was not applied at all. Each bad patient fails alone (exit 2)."""
    import numpy as np
    import torch
    from _cohorts import write_features_h5

    import steph.data
    from steph.bundles.model import load_bundle_model
    from steph.config import load_config
    from steph.layout import ProjectLayout

    bundle = _bundle(tmp_path / "m.safetensors")
    root = tmp_path / "p"
    layout = ProjectLayout(root, load_config(root, require=False).paths)
    encoder = load_bundle_model(bundle, device=torch.device("cpu")).encoder
    rng = np.random.default_rng(0)
    shapes = {"WIDE": (4, 64), "LONG": (12, 128), "FINE": (6, 128)}
    for sid, shape in shapes.items():
        write_features_h5(layout.features(encoder, sid), rng.normal(size=shape))
    manifest = tmp_path / "new.csv"
    manifest.write_text("patient_id,slide_id\n" + "".join(f"P-{s},{s}\n" for s in shapes))
    read: list[str] = []
    original = steph.data.read_features

    def read_features(path: Path):
        read.append(Path(path).stem)
        return original(path)

    monkeypatch.setattr(steph.data, "read_features", read_features)
    result = cli(
        "-p", root, "predict", "--manifest", manifest, "--model", bundle, "--max-patches", 10, "--json"
    )
    assert result.exit_code == 2, result.output
    assert f"{layout.features(encoder, 'WIDE')} has features of D=64, the model takes D=128" in result.output
    assert "declares 12 patches, more than max_patches (10)" in result.output
    assert read == ["FINE"]  # the refused files were not read
    (root / "stephctl.yaml").write_text("max_patches: 5\n")
    read.clear()
    again = cli("-p", root, "predict", "--manifest", manifest, "--model", bundle, "--name", "b", "--json")
    assert again.exit_code == 1, again.output  # no patient left
    assert "declares 6 patches, more than max_patches (5)" in again.output
    assert read == []
