"""Extraction keeps the encoder busy: the next slide prepared in the background, the reader pool sized."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from _slides import (
    TEST_EXTRACT_CONFIG,
    record_grid_threads,
    row,
    write_blank_slide,
    write_manifest,
    write_slide,
)

import steph.extraction.slide_job as slide_job
from steph.config import load_project
from steph.config.extract import ExtractConfig
from steph.extraction.overlap import reader_threads
from steph.extraction.slide_job import extract_slide
from steph.extractors import create_encoder
from steph.pipeline.extract import extract_features
from steph.project import init_project
from steph.report import Status
from steph.slides.manifest import read_manifest


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("slides")
    paths = {f"x{i}": write_slide(d / f"x{i}.tif", 0.5, seed=i) for i in range(3)}
    paths["blank"] = write_blank_slide(d / "blank.tif")
    return paths


def project(tmp_path: Path, rows: list[dict[str, object]], **overrides: object) -> Any:
    root = init_project(tmp_path / "p").root
    write_manifest(root, rows)
    return load_project(root, {**TEST_EXTRACT_CONFIG, **overrides})


def read_h5(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        return {
            "attrs": dict(f.attrs),
            "features": f["features"][:],
            "coords": f["coords"][:],
            "features_attrs": dict(f["features"].attrs),
            "coords_attrs": dict(f["coords"].attrs),
        }


def test_outputs_identical_to_one_slide_after_the_other(tmp_path: Path, slides: dict[str, Path]) -> None:
    """The pipeline (next slide prepared ahead, first batches read there) writes what
    ``extract_slide`` writes slide by slide: same features, coords and attributes."""
    ids = ["x0", "x1", "x2"]
    layout, config = project(tmp_path, [row(i, slides[i]) for i in ids], **{"extract.batch_size": 8})
    report = extract_features(layout, config)
    assert [i.status for i in report.items] == [Status.DONE] * 3
    encoder = create_encoder("tiny-cnn")
    for entry in read_manifest(layout):
        reference = tmp_path / "sequential" / f"{entry.slide_id}.h5"
        reference.parent.mkdir(exist_ok=True)
        extract_slide(
            entry,
            encoder=encoder,
            config=config.extract,
            output=reference,
            thumbnail=reference.with_suffix(".png"),
        )
        got, want = read_h5(layout.own_features("tiny-cnn", entry.slide_id)), read_h5(reference)
        assert got["features"].tobytes() == want["features"].tobytes()
        assert got["coords"].tobytes() == want["coords"].tobytes()
        assert len(got["coords"]) > 2 * 8  # several batches: the head and the rest both used
        for key in ("attrs", "features_attrs", "coords_attrs"):
            assert got[key].keys() == want[key].keys()
            for name, value in want[key].items():
                np.testing.assert_array_equal(got[key][name], value, err_msg=f"{key}[{name}]")


class _Watch:
    """Records every grid built (slide id, thread) and which slide is encoding (progress)."""

    def __init__(self) -> None:
        self.grids: list[tuple[str, str]] = []
        self.started = 0
        self.changed = threading.Condition()

    def start(self, task: str, total: int | None = None, *, unit: str = "items") -> None:
        if task == "patches":
            self.started += 1

    def advance(self, task: str, n: int = 1, **info: Any) -> None:
        pass

    def finish(self, task: str) -> None:
        pass


def test_next_slide_is_prepared_while_the_current_one_encodes(
    tmp_path: Path, slides: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = _Watch()
    make_grid = slide_job.make_grid

    def recording_make_grid(**kwargs: Any) -> Any:
        grid = make_grid(**kwargs)
        with watch.changed:
            watch.grids.append((kwargs["slide_id"], threading.current_thread().name))
            watch.changed.notify_all()
        return grid

    monkeypatch.setattr(slide_job, "make_grid", recording_make_grid)
    ids = ["x0", "x1", "x2"]
    layout, config = project(tmp_path, [row(i, slides[i]) for i in ids])
    tiny = create_encoder("tiny-cnn")
    original = tiny.encode
    seen: list[tuple[int, bool]] = []  # (slide being encoded, next slide's grid built)

    def encode(patches: np.ndarray) -> np.ndarray:
        current = watch.started
        wanted = min(current + 1, len(ids))
        with watch.changed:  # a sequential extraction never builds it meanwhile: wait in vain
            watch.changed.wait_for(lambda: len(watch.grids) >= wanted, timeout=3.0)
            seen.append((current, len(watch.grids) >= wanted))
        return original(patches)

    monkeypatch.setattr(tiny, "encode", encode)
    monkeypatch.setattr("steph.pipeline.extract.create_encoder", lambda *a, **k: tiny)
    report = extract_features(layout, config, progress=watch)
    assert [i.status for i in report.items] == [Status.DONE] * 3
    assert [slide for slide, _ in watch.grids] == ids
    assert {current for current, _ in seen} == {1, 2, 3}
    assert all(ready for _, ready in seen), seen
    assert [thread.startswith("steph-prepare") for _, thread in watch.grids] == [False, True, True]


def test_a_failed_preparation_ahead_fails_that_slide_alone(
    tmp_path: Path, slides: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = record_grid_threads(monkeypatch)
    layout, config = project(
        tmp_path, [row("x0", slides["x0"]), row("x1", slides["blank"]), row("x2", slides["x2"])]
    )
    report = extract_features(layout, config)
    assert [(i.key, i.status) for i in report.items] == [
        ("x0", Status.DONE),
        ("x1", Status.FAILED),
        ("x2", Status.DONE),
    ]
    assert "no tissue" in report.items[1].message.lower()
    assert threads["x1"].startswith("steph-prepare")  # it failed in the background
    assert not layout.own_features("tiny-cnn", "x1").exists()
    assert layout.thumbnail("tiny-cnn", "x1").is_file()  # drawn without a grid, as before
    assert not list(layout.features_dir("tiny-cnn").glob("*.lock"))


def test_complete_slides_are_not_prepared_ahead(
    tmp_path: Path, slides: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = ["x0", "x1", "x2"]
    layout, config = project(tmp_path, [row(i, slides[i]) for i in ids])
    extract_features(layout, config, slides_file=_ids_file(tmp_path, ["x1"]))
    prepared: list[str] = []
    prepare = slide_job.prepare_slide

    def recording_prepare(entry: Any, **kwargs: Any) -> Any:
        prepared.append(entry.slide_id)
        return prepare(entry, **kwargs)

    monkeypatch.setattr("steph.extraction.ahead.prepare_slide", recording_prepare)
    report = extract_features(layout, config)
    assert [i.status for i in report.items] == [Status.DONE, Status.SKIPPED, Status.DONE]
    assert prepared == ["x0", "x2"]


def _ids_file(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(ids) + "\n")
    return path


def test_reader_pool_follows_the_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ExtractConfig().workers is None  # the default follows the CPUs
    assert [reader_threads(None, cpus=n) for n in (1, 2, 3, 4, 8, 16, 17, 64)] == [2, 2, 2, 3, 7, 15, 16, 16]
    assert [reader_threads(w, cpus=64) for w in (0, 1, 5, 40)] == [0, 1, 5, 40]  # a set value is kept
    monkeypatch.setattr("steph.threads.usable_cpus", lambda *a, **k: 9)
    assert reader_threads(None) == 8
