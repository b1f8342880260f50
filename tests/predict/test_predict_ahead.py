"""predict's own extraction prepares the next slide to extract while the current one encodes,
as `stephctl extract` does, and writes what extracting slide after slide writes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import h5py
import pytest
import torch
from _slides import TEST_EXTRACT_CONFIG, record_grid_threads, write_blank_slide, write_slide

import steph.extraction.slide_job as slide_job
from steph.config import load_project
from steph.errors import SlideError
from steph.extraction.slide_job import extract_slide
from steph.extractors import create_encoder
from steph.layout import PredictionLayout
from steph.predict.features import FeatureMaker
from steph.predict.inputs import SlideInput
from steph.project import init_project
from steph.slides.manifest import SlideEntry


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("slides")
    paths = {f"x{i}": write_slide(d / f"x{i}.tif", 0.5, seed=i) for i in range(4)}
    paths["blank"] = write_blank_slide(d / "blank.tif")
    return paths


def maker(tmp_path: Path) -> FeatureMaker:
    """A FeatureMaker of a tiny-cnn model for the run ``tmp_path/run`` (the project made once)."""
    root = tmp_path / "p"
    if not root.exists():
        init_project(root)
    layout, config = load_project(root, {**TEST_EXTRACT_CONFIG, "extract.batch_size": 8})
    model = SimpleNamespace(
        encoder="tiny-cnn", encoder_weights=None, encoder_weights_file=None, extraction=config.extract
    )
    return FeatureMaker(layout, PredictionLayout(tmp_path / "run"), model, device=torch.device("cpu"))  # type: ignore[arg-type]


def features(path: Path) -> tuple[bytes, bytes]:
    with h5py.File(path, "r") as f:
        return f["features"][:].tobytes(), f["coords"][:].tobytes()


def extract_all(made: FeatureMaker, queue: list[SlideInput]) -> dict[str, Path | Exception]:
    """What predict's gather does: each slide asked for with the slides after it."""
    out: dict[str, Path | Exception] = {}
    with made:
        for k, slide in enumerate(queue):
            try:
                out[slide.slide_id] = made.features(slide, "P", upcoming=((s, "P") for s in queue[k + 1 :]))
            except SlideError as exc:
                out[slide.slide_id] = exc
    return out


def test_the_next_slide_is_prepared_ahead_and_the_features_are_those_of_one_slide_at_a_time(
    tmp_path: Path, slides: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = record_grid_threads(monkeypatch)
    made = maker(tmp_path)
    queue = [SlideInput(i, slides[i]) for i in ("x0", "x1", "x2")]
    out = extract_all(made, queue)
    assert made.extracted == 3
    assert [threads[i].startswith("steph-prepare") for i in ("x0", "x1", "x2")] == [False, True, True]
    encoder = create_encoder("tiny-cnn")
    for slide in queue:
        reference = tmp_path / "sequential" / f"{slide.slide_id}.h5"
        reference.parent.mkdir(exist_ok=True)
        extract_slide(
            SlideEntry(slide.slide_id, "", "", slide.path or Path(), None, 0),
            encoder=encoder,
            config=made.model.extraction,
            output=reference,
            thumbnail=reference.with_suffix(".png"),
        )
        got = out[slide.slide_id]
        assert isinstance(got, Path)
        assert features(got) == features(reference)
        assert made.run.thumbnail("tiny-cnn", slide.slide_id).is_file()


def test_slides_with_features_are_not_prepared_and_a_failed_preparation_fails_its_slide_alone(
    tmp_path: Path, slides: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    made = maker(tmp_path)
    extract_all(made, [SlideInput("x1", slides["x1"])])  # x1's features exist in the run
    threads = record_grid_threads(monkeypatch)
    prepared: list[str] = []
    prepare = slide_job.prepare_slide

    def recording_prepare(entry: Any, **kwargs: Any) -> Any:
        prepared.append(entry.slide_id)
        return prepare(entry, **kwargs)

    monkeypatch.setattr("steph.extraction.ahead.prepare_slide", recording_prepare)
    queue = [SlideInput(i, slides[i]) for i in ("x0", "x1", "blank", "x3")]
    again = maker(tmp_path)
    out = extract_all(again, queue)
    assert prepared == ["x0", "blank", "x3"]  # x1 skipped: its features are reused
    assert isinstance(out["x0"], Path) and isinstance(out["x1"], Path) and isinstance(out["x3"], Path)
    assert isinstance(out["blank"], SlideError) and "no tissue" in str(out["blank"]).lower()
    assert threads["blank"].startswith("steph-prepare") and threads["x3"].startswith("steph-prepare")
    assert again.extracted == 2
    assert not again.run.features("tiny-cnn", "blank").exists()
