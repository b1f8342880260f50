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
