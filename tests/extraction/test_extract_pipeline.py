"""`extract_features` end to end on tiny pyramidal slides: layout, bad inputs, resume, locks, shards."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from _slides import (
    BLOCKS_UM,
    TEST_EXTRACT_CONFIG,
    corrupt_level0_tiles,
    expected_coords,
    render,
    row,
    write_blank_slide,
    write_manifest,
    write_slide,
)

from steph.config import load_project
from steph.errors import DataError, UnknownNameError
from steph.extraction import is_complete, read_attrs
from steph.extractors.base import Encoder
from steph.fileio import TMP_PREFIX, read_csv
from steph.locks import lock_path_for
from steph.pipeline.extract import extract_features, select_slides
from steph.project import init_project
from steph.report import Status
from steph.synthetic.tiff import write_pyramidal_tiff


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Read-only slides shared by the tests of this module."""
    d = tmp_path_factory.mktemp("slides")
    paths = {
        "s40": write_slide(d / "s40.tif", 0.25),
        "s20": write_slide(d / "s20.tif", 0.5),
        "nompp": write_slide(d / "nompp.tif", None, render_mpp=0.5),
        "dpi72": write_slide(d / "dpi72.tif", None, render_mpp=0.5, resolution_dpi=72),
        "blank": write_blank_slide(d / "blank.tif"),
        "tiny": write_pyramidal_tiff(
            d / "tiny.tif", render(0.5, size_um=(20, 20), blocks_um=((0, 0, 20, 20),)), mpp=0.5, tile=128
        ),
        "corrupt": corrupt_level0_tiles(write_slide(d / "corrupt.tif", 0.5, compression="zlib")),
    }
    (d / "notaslide.svs").write_text("this is not an image\n")
    paths["notaslide"] = d / "notaslide.svs"
    for i in range(5):
        paths[f"x{i}"] = write_slide(d / f"x{i}.tif", 0.5, seed=i)
    return paths


def project(tmp_path: Path, rows: list[dict[str, object]], **overrides: object):
    root = init_project(tmp_path / "p").root
    write_manifest(root, rows)
    return load_project(root, {**TEST_EXTRACT_CONFIG, **overrides})


def leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.startswith(TMP_PREFIX) or p.name.endswith(".lock")]


def test_patches_coords_and_format_at_20x_and_40x(tmp_path: Path, slides: dict[str, Path]) -> None:
    layout, config = project(
        tmp_path, [row("s40", slides["s40"]), row("s20", slides["s20"], cancer="tcga_blca")]
    )
    report = extract_features(layout, config)
    assert [i.status for i in report.items] == [Status.DONE, Status.DONE]
    coords = {}
    for slide_id, mpp in (("s40", 0.25), ("s20", 0.5)):
        path = layout.own_features("tiny-cnn", slide_id)
        with h5py.File(path, "r") as f:
            feats, coords[slide_id] = f["features"][:], f["coords"][:]
            trident = dict(f["coords"].attrs)
            assert f["features"].dtype == np.float32 and f["coords"].dtype == np.int64
            assert f["features"].attrs["encoder"] == "tiny-cnn"
        assert feats.shape == (40, 128) and np.isfinite(feats).all()
        assert {tuple(c) for c in coords[slide_id].tolist()} == expected_coords(BLOCKS_UM, mpp)
        attrs = read_attrs(path)
        assert attrs["complete"] == 1 and attrs["n_patches"] == 40 and attrs["embed_dim"] == 128
        assert attrs["encoder_weights"] == "random-init seed 0" and attrs["slide_mpp"] == mpp
        assert attrs["mpp_source"] == "slide:openslide.mpp-x" and attrs["target_mpp"] == 0.5
        assert attrs["patch_size"] == 64 and attrs["patch_size_level0"] == round(32 / mpp)
        assert (attrs["slide_width"], attrs["slide_height"]) == (round(512 / mpp), round(384 / mpp))
        assert attrs["stephctl_version"]
        assert trident == {
            "patch_size": 64,
            "patch_size_level0": round(32 / mpp),
            "level0_magnification": 10 / mpp,
            "target_magnification": 20.0,
            "level0_width": round(512 / mpp),
            "level0_height": round(384 / mpp),
            "overlap": 0,
            "name": slide_id,
        }
        assert layout.thumbnail("tiny-cnn", slide_id).is_file()
    # same tissue, same physical patches: microns of every patch corner agree at 20x and 40x
    assert np.array_equal(coords["s40"] * 0.25, coords["s20"] * 0.5)
    assert layout.extract_config("tiny-cnn").is_file() and Path(report.outputs["log"]).is_file()
    assert report.outputs["patches"] == 80 and not leftovers(layout.features_dir("tiny-cnn"))


def test_every_bad_input_fails_alone_and_leaves_nothing_behind(
    tmp_path: Path, slides: dict[str, Path]
) -> None:
    rows = [
        row("good", slides["s20"]),
        row("missing", "slides/does-not-exist.svs"),
        row("notaslide", slides["notaslide"]),
        row("corrupt", slides["corrupt"]),
        row("nompp", slides["nompp"]),
        row("dpi72", slides["dpi72"]),
        row("tiny", slides["tiny"]),
        row("blank", slides["blank"]),
        row("bad/id", slides["s20"]),
    ]
    layout, config = project(tmp_path, rows)
    report = extract_features(layout, config)
    status = {i.key: i for i in report.items}
    assert status["good"].status is Status.DONE
    expected = {
        "missing": "file not found",
        "notaslide": "OpenSlide cannot open",
        "corrupt": "cannot decode the region",
        "nompp": "no plausible microns-per-pixel",
        "dpi72": "352.8 um/px, outside the plausible range",
        "tiny": "smaller than one patch",
        "blank": "no tissue",
        "bad/id": "not a safe file name",
    }
    for key, text in expected.items():
        assert status[key].status is Status.FAILED, key
        assert text in status[key].message, (key, status[key].message)
    features = layout.features_dir("tiny-cnn")
    assert sorted(p.name for p in features.glob("*.h5")) == ["good.h5"]
    assert not leftovers(features)
    failures = {r["slide_id"]: r for r in read_csv(layout.extract_failures("tiny-cnn"))}
    assert set(failures) == set(expected)
    assert "plausible" in failures["dpi72"]["error"] and failures["dpi72"]["hint"]


def test_mpp_from_manifest_or_config(tmp_path: Path, slides: dict[str, Path]) -> None:
    layout, config = project(
        tmp_path, [row("a", slides["nompp"], mpp=0.5), row("b", slides["dpi72"])], **{"extract.mpp": 0.5}
    )
    report = extract_features(layout, config)
    sources = {i.key: i.details["mpp_source"] for i in report.items}
    assert sources == {"a": "manifest", "b": "config"}
    assert read_attrs(layout.own_features("tiny-cnn", "a"))["mpp_source"] == "manifest"


def test_run_level_errors_come_before_any_work(tmp_path: Path, slides: dict[str, Path]) -> None:
    layout, config = project(
        tmp_path, [row("a", slides["s20"]), row("b", slides["s40"]), row("a", slides["s40"])]
    )
    with pytest.raises(DataError, match="duplicate slide_id: a"):
        extract_features(layout, config)
    assert not list(layout.features_root.rglob("*.h5"))
    write_manifest(layout.root, [row("a", slides["s20"])])
    _, config = load_project(layout.root, {**TEST_EXTRACT_CONFIG, "encoder": "uni-3"})
    with pytest.raises(UnknownNameError, match="unknown encoder 'uni-3'") as info:
        extract_features(layout, config)
    assert "uni2-h" in (info.value.hint or "")


def test_resume_skips_complete_and_redoes_incomplete(tmp_path: Path, slides: dict[str, Path]) -> None:
    layout, config = project(tmp_path, [row("a", slides["x0"]), row("b", slides["x1"])])
    assert extract_features(layout, config).count(Status.DONE) == 2
    second = extract_features(layout, config)
    assert [i.status for i in second.items] == [Status.SKIPPED, Status.SKIPPED]
    path_b = layout.own_features("tiny-cnn", "b")
    with h5py.File(path_b, "r+") as f:  # a file that claims to be unfinished is not done
        f.attrs["complete"] = 0
    third = extract_features(layout, config)
    assert {i.key: i.status for i in third.items} == {"a": Status.SKIPPED, "b": Status.DONE}
    assert is_complete(path_b)
    before = path_b.stat().st_mtime_ns
    forced = extract_features(layout, config, overwrite=True)
    assert forced.count(Status.DONE) == 2 and path_b.stat().st_mtime_ns != before


def test_interrupted_slide_leaves_no_output_and_resumes(
    tmp_path: Path, slides: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, config = project(tmp_path, [row("a", slides["x0"])])
    original = Encoder.encode
    calls = {"n": 0}

    def dying(self: Encoder, patches: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C (or SIGTERM turned into an exception) mid-slide
        return original(self, patches)

    monkeypatch.setattr(Encoder, "encode", dying)
    with pytest.raises(KeyboardInterrupt):
        extract_features(layout, config)
    output = layout.own_features("tiny-cnn", "a")
    assert not output.exists() and not leftovers(layout.features_dir("tiny-cnn"))
    monkeypatch.setattr(Encoder, "encode", original)
    assert extract_features(layout, config).items[0].status is Status.DONE and is_complete(output)


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path: Path, slides: dict[str, Path]) -> None:
    """Kill -9 a real `stephctl extract` mid-slide: no final file; a rerun cleans up and finishes."""
    import signal
    import subprocess
    import sys

    big = write_slide(tmp_path / "big.tif", 0.5, size_um=(1024, 1024), blocks_um=((0, 0, 1024, 1024),))
    layout, _ = project(tmp_path, [row("big", big)])
    cmd = [
        sys.executable,
        "-m",
        "stephctl",
        "-q",
        "-p",
        str(layout.root),
        "extract",
        "--batch-size",
        "1",
        "--workers",
        "1",
    ]
    cfg = (
        layout.config_file.read_text()
        .replace("patch_size: 256", "patch_size: 64")
        .replace("thumbnail_mpp: 8.0", "thumbnail_mpp: 2.0")
    )
    layout.config_file.write_text(cfg)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    features = layout.features_dir("tiny-cnn")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(p.name.startswith(TMP_PREFIX) for p in features.glob("*")):
        assert proc.poll() is None, "stephctl extract ended before it started writing"
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    output = layout.own_features("tiny-cnn", "big")
    assert not output.exists(), "the kill came too late to test anything"
    assert any(p.name.startswith(TMP_PREFIX) for p in features.glob("*")) and lock_path_for(output).exists()
    _, config = load_project(layout.root, {**TEST_EXTRACT_CONFIG})
    report = extract_features(layout, config)  # the dead process's lock on this host is cleared
    assert report.items[0].status is Status.DONE and is_complete(output)
    assert not leftovers(features)


def _foreign_lock(output: Path, *, age_hours: float) -> None:
    lock = lock_path_for(output)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(
        json.dumps({"host": "other-node", "pid": 12345, "started": time.time() - age_hours * 3600})
    )


def test_locked_slides_are_reported_not_failed(tmp_path: Path, slides: dict[str, Path]) -> None:
    layout, config = project(
        tmp_path, [row("a", slides["x0"]), row("b", slides["x1"]), row("c", slides["x2"])]
    )
    _foreign_lock(layout.own_features("tiny-cnn", "a"), age_hours=0.1)  # alive elsewhere
    _foreign_lock(layout.own_features("tiny-cnn", "b"), age_hours=100)  # stale by age
    dead = lock_path_for(layout.own_features("tiny-cnn", "c"))  # a dead process of this host
    dead.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "started": time.time()}))
    report = extract_features(layout, config)
    assert {i.key: i.status for i in report.items} == {
        "a": Status.LOCKED,
        "b": Status.LOCKED,
        "c": Status.DONE,
    }
    # issue 16: locked slides are not done, so the run is not ok (exit 2)
    assert not report.ok and "--clear-stale-locks" in (report.items[0].details.get("hint") or "")
    from steph.config.project import Project
    from steph.stages import get_stage

    get_stage("extract").clear_stale_locks(Project(layout, config))  # --clear-stale-locks
    cleared = extract_features(layout, config)
    assert {i.key: i.status for i in cleared.items} == {
        "a": Status.LOCKED,
        "b": Status.DONE,
        "c": Status.SKIPPED,
    }


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_shards_cover_every_slide_once_and_failures_merge(tmp_path: Path, slides: dict[str, Path]) -> None:
    rows = [row(f"x{i}", slides[f"x{i}"]) for i in range(5)] + [row("blank", slides["blank"])]
    layout, config = project(tmp_path, rows)
    seen: list[str] = []
    for index in range(
        3
    ):  # the Slurm task id picks the shard in the stage (tests/extraction/test_extract_cli.py)
        units = select_slides(layout, num_shards=3, shard_index=index).entries
        report = extract_features(layout, config, num_shards=3, shard_index=index)
        assert [u.slide_id for u in units] == [i.key for i in report.items]
        assert report.outputs["shard"] == f"{index}/3"
        seen += [i.key for i in report.items]
    assert sorted(seen) == sorted(r["slide_id"] for r in rows)
    assert len(list(layout.features_dir("tiny-cnn").glob("*.h5"))) == 5
    assert [r["slide_id"] for r in read_csv(layout.extract_failures("tiny-cnn"))] == ["blank"]
    # a later run of another shard keeps blank's failure; fixing blank clears it
    shutil.copy(slides["x0"], tmp_path / "fixed.tif")
    write_manifest(layout.root, [*rows[:5], row("blank", tmp_path / "fixed.tif")])
    extract_features(layout, config, slides_file=_ids(tmp_path, ["x1"]))
    assert [r["slide_id"] for r in read_csv(layout.extract_failures("tiny-cnn"))] == ["blank"]
    extract_features(layout, config, slides_file=_ids(tmp_path, ["blank"]))
    assert read_csv(layout.extract_failures("tiny-cnn")) == []


def _ids(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(ids) + "\n")
    return path


def test_selection_by_cancer_and_by_external_manifest(tmp_path: Path, slides: dict[str, Path]) -> None:
    layout, config = project(
        tmp_path, [row("a", slides["x0"], cancer="BRCA"), row("b", slides["x1"], cancer="tcga_luad")]
    )
    assert [i.key for i in extract_features(layout, config, cancers=["luad"]).items] == ["b"]
    other = write_manifest(tmp_path / "elsewhere", [row("z", slides["x2"], cancer="BLCA")])
    report = extract_features(layout, config, slides_file=other)
    assert [(i.key, i.status) for i in report.items] == [("z", Status.DONE)]
    assert os.path.exists(layout.own_features("tiny-cnn", "z"))


def test_any_timm_model_with_a_weights_file(tmp_path: Path, slides: dict[str, Path]) -> None:
    import torch

    from steph.extractors import get_encoder_spec

    weights = tmp_path / "test_resnet.pth"
    torch.save({"state_dict": get_encoder_spec("timm:test_resnet").architecture().state_dict()}, weights)  # type: ignore[misc]
    layout, config = project(
        tmp_path,
        [row("a", slides["s20"])],
        encoder="timm:test_resnet",
        **{"extract.weights": {"timm:test_resnet": str(weights)}},
    )
    report = extract_features(layout, config)
    assert report.items[0].status is Status.DONE
    output = layout.features_root / "timm-test_resnet" / "a.h5"
    assert output == layout.own_features("timm:test_resnet", "a")
    attrs = read_attrs(output)
    assert attrs["encoder"] == "timm:test_resnet" and attrs["embed_dim"] == 96 and attrs["n_patches"] == 40
