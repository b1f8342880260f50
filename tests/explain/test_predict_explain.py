"""`stephctl predict --explain`: each predicted patient's explain pages, from slides and from features.

A tiny project holds one random-init cancer-specific ABMIL (tiny-cnn features); the attention
in each page's GeoJSON is checked against the module run independently under
``capture_attention`` on the patient's bag, read back from the feature files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_explain import synthetic_slide

from steph.checkpoints import save_state_dict
from steph.config import load_project
from steph.data import read_features
from steph.evaluation.predictors import project_model
from steph.fileio import write_csv
from steph.layout import PredictionLayout
from steph.models.abmil import capture_attention, create_abmil
from steph.predict.explain import patient_attention, patient_transfer
from steph.synthetic.project import init_configured_project

TARGET = "BRCA"
OVERRIDES = {
    "model.dim_emb": 16,
    "model.dim_attn": 8,
    "model.time_bins": 4,
    "train.device": "cpu",
    "extract.device": "cpu",
    "extract.patch_size": 128,
    "extract.target_mpp": 1.0,
    "extract.batch_size": 32,
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a random-init ABMIL of tiny-cnn features as BRCA's fold-0 model, and two slides."""
    root = tmp_path_factory.mktemp("predict-explain") / "P"
    init_configured_project(root, cancers=[TARGET], encoder="tiny-cnn", overrides=OVERRIDES, note="test")
    layout, config = load_project(root)
    from steph.extractors import get_encoder_spec

    torch.manual_seed(0)
    model = create_abmil(get_encoder_spec("tiny-cnn").embed_dim, config.model)
    save_state_dict(layout.model_weights(TARGET, 0), model.state_dict())
    (root / "new").mkdir()
    for i in (1, 2):
        synthetic_slide(root / "new" / f"NEW-{i}.tif", seed=i, size_um=1024.0)
    return root


def _module(root: Path) -> torch.nn.Module:
    layout, config = load_project(root)
    return project_model(layout, config, TARGET, "cancer-specific", 0, device=torch.device("cpu")).modules[0][
        1
    ]


def _geojson_attention(page_dir: Path, slide_id: str) -> tuple[np.ndarray, np.ndarray]:
    data = json.loads((page_dir / f"{slide_id}.geojson").read_text())
    assert data["type"] == "FeatureCollection"
    att = [f["properties"]["measurements"]["Attention"] for f in data["features"]]
    corners = [f["geometry"]["coordinates"][0][0] for f in data["features"]]
    return np.array(att), np.array(corners)


def _independent_attention(module: torch.nn.Module, feature_files: list[Path]) -> np.ndarray:
    bag = torch.cat([read_features(p) for p in feature_files])
    with torch.inference_mode(), capture_attention() as maps:
        module(bag.unsqueeze(0))
    return maps[-1][0].double().numpy()


def test_predict_explain_from_slides_writes_pages_with_the_models_attention(project: Path, cli) -> None:
    slides = [project / "new" / "NEW-1.tif", project / "new" / "NEW-2.tif"]
    args = ["-p", project, "predict", *slides, "-t", TARGET, "-m", "cancer-specific", "-k", 0]
    result = cli(*args, "--explain", "--patches", 3, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    run = PredictionLayout(Path(report["outputs"]["run"]))
    assert sorted(report["outputs"]["pages"]) == sorted(str(run.patient_page(p)) for p in ("NEW-1", "NEW-2"))
    items = {i["key"]: i for i in report["items"]}
    module = _module(project)
    for pid in ("NEW-1", "NEW-2"):
        folder = run.patient_dir(pid)
        listed = {Path(f).name for f in items[f"{pid}/explain"]["details"]["files"]}
        assert {f"heatmap-{pid}.png", "patches.png", f"{pid}.geojson", "index.html"} <= listed
        assert all((folder / name).is_file() for name in listed)
        attention, corners = _geojson_attention(folder, pid)
        expected = _independent_attention(module, [run.features("tiny-cnn", pid)])
        np.testing.assert_allclose(attention, expected, rtol=1e-5, atol=1e-9)
        assert attention.sum() == pytest.approx(1.0, abs=1e-6)
        from steph.extraction.h5format import read_coords

        np.testing.assert_array_equal(corners, read_coords(run.features("tiny-cnn", pid)))
    # the same run again: finished with its pages, so skipped, and the pages are still listed
    again = json.loads(cli(*args, "--explain", "--patches", 3, "--json").stdout)
    assert again["items"][0]["status"] == "skipped"
    assert sorted(again["outputs"]["pages"]) == sorted(report["outputs"]["pages"])


def test_predict_explain_from_features_draws_on_the_grid(project: Path, tmp_path: Path, cli) -> None:
    """A patient of two slides given by features only: one page, attention over both slides sums to 1."""
    layout, _ = load_project(project)
    seed = tmp_path / "seed"
    first = cli("-p", project, "predict", *sorted((project / "new").glob("*.tif")), "-t", TARGET, "-m",
                "cancer-specific", "-k", 0, "--out", seed)  # fmt: skip
    assert first.exit_code == 0, first.output
    for i in (1, 2):
        dest = layout.features("tiny-cnn", f"OLD-S{i}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PredictionLayout(seed).features("tiny-cnn", f"NEW-{i}"), dest)
    manifest = tmp_path / "m.csv"
    write_csv(manifest, ["patient_id", "slide_id"], [["OLD", "OLD-S1"], ["OLD", "OLD-S2"]])
    out = tmp_path / "run"
    result = cli("-p", project, "predict", "--manifest", manifest, "-t", TARGET, "-m", "cancer-specific",
                 "-k", 0, "--out", out, "--explain", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    run = PredictionLayout(out)
    assert report["outputs"]["pages"] == [str(run.patient_page("OLD"))]
    item = next(i for i in report["items"] if i["key"] == "OLD/explain")
    names = {Path(f).name for f in item["details"]["files"]}
    assert {"heatmap-OLD-S1.png", "heatmap-OLD-S2.png", "OLD-S1.geojson", "OLD-S2.geojson"} <= names
    assert "patches.png" not in names and any("coordinate grid" in n for n in item["details"]["notices"])
    files = [layout.features("tiny-cnn", f"OLD-S{i}") for i in (1, 2)]
    both = np.concatenate([_geojson_attention(run.patient_dir("OLD"), f"OLD-S{i}")[0] for i in (1, 2)])
    np.testing.assert_allclose(both, _independent_attention(_module(project), files), rtol=1e-5, atol=1e-9)
    assert both.sum() == pytest.approx(1.0, abs=1e-6)


def test_a_missing_slide_loses_only_its_montage(project: Path, tmp_path: Path, cli) -> None:
    """Features already extracted in the run, slide gone: predicted, page on the grid, exit 2 naming it."""
    slide = tmp_path / "NEW-1.tif"
    shutil.copy(project / "new" / "NEW-1.tif", slide)
    out = tmp_path / "run"
    args = ["-p", project, "predict", slide, "-t", TARGET, "-m", "cancer-specific", "-k", 0, "--out", out]
    assert cli(*args).exit_code == 0
    # The slide can no longer be read, while its identity (size, mtime) still matches the
    # features, which are therefore reused (a changed file would be extracted again).
    stat = slide.stat()
    slide.write_bytes(b"\0" * stat.st_size)
    os.utime(slide, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = cli(*args, "--explain", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 2, result.output
    items = {i["key"]: i for i in report["items"]}
    assert items["NEW-1"]["status"] == "done"
    assert items["NEW-1/explain"]["status"] == "failed" and "NEW-1" in items["NEW-1/explain"]["message"]
    assert (out / "patients" / "NEW-1" / "heatmap-NEW-1.png").is_file()


def test_an_ensemble_shows_the_mean_of_its_folds_attention_and_transfer() -> None:
    """a_k = mean_f a_k^(f) (sums to 1); w, lambda fold means; selected by most folds."""
    from dataclasses import dataclass

    from steph.config import ExtractConfig, ModelConfig
    from steph.evaluation.predictors import LoadedModel

    torch.manual_seed(1)
    config = ModelConfig(dim_emb=8, dim_attn=4, time_bins=4)
    folds = [create_abmil(6, config).eval() for _ in range(3)]
    model = LoadedModel("ens", tuple(enumerate(folds)), "tiny-cnn", None, None, ExtractConfig(), 6, 4, 365.0,
                        None, sources={k: ("A", "B") for k in range(3)})  # fmt: skip
    bag = torch.randn(11, 6)
    attention, _ = patient_attention(model, bag, torch.device("cpu"))
    loop = np.zeros(11)
    for module in folds:
        with torch.inference_mode(), capture_attention() as maps:
            module(bag.unsqueeze(0))
        loop += maps[-1][0].double().numpy() / 3
    np.testing.assert_allclose(attention, loop, rtol=1e-6)
    assert attention.sum() == pytest.approx(1.0)

    @dataclass
    class Extras:
        w: list[float]
        lam: list[float]
        sel: list[float]

    rows = [Extras([0.2, 0.8], [0.1, 0.5], [0, 1]), Extras([0.4, 0.6], [0.3, 0.7], [1, 1]),
            Extras([0.6, 0.4], [0.2, 0.3], [0, 0])]  # fmt: skip
    extras = [
        {"w": torch.tensor([r.w]), "lambda": torch.tensor([r.lam]), "selected": torch.tensor([r.sel])}
        for r in rows
    ]
    transfer = patient_transfer(model, extras)
    assert transfer is not None and transfer.sources == ("A", "B")
    np.testing.assert_allclose(transfer.w, [0.4, 0.6], rtol=1e-6)
    np.testing.assert_allclose(transfer.lam, [0.2, 0.5], rtol=1e-6)
    assert transfer.selected == (False, True)
    assert patient_transfer(model, [{}, {}, {}]) is None  # cancer-specific: no chart


@pytest.mark.slow
def test_steph_bundle_pages_carry_the_patients_transfer_and_an_ensemble_the_fold_mean(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, cli
) -> None:
    """Project A's STEPH fold 0 as a bundle: each test patient's bars are the run's coefficients.csv;
    the all-folds bundle's page attention is the mean of the fold modules' (computed here)."""
    from _bundle_project import project_a

    from steph.bundles.model import load_bundle_model
    from steph.data import load_cohort, load_split
    from steph.evaluation.inputs import read_coefficients
    from steph.fileio import read_csv

    a = project_a(tmp_path_factory)
    layout, config = load_project(a)
    run_name = "steph-top1"
    test = list(load_split(layout, load_cohort(layout, config, TARGET), 0).test)[:2]
    rows = [r for r in read_csv(a / "slides" / "manifest.csv") if r["patient_id"] in test]
    manifest = tmp_path / "m.csv"
    write_csv(
        manifest,
        ["patient_id", "slide_id", "path"],
        [[r["patient_id"], r["slide_id"], r["path"]] for r in rows],
    )
    coefficients = read_coefficients(layout.merged_file(TARGET, run_name, 0, "coefficients.csv"))
    for folds, name in ((["-k", 0], "one"), (["--all-folds"], "all")):
        bundle = tmp_path / f"{name}.safetensors"
        exported = cli("-p", a, "export", "-t", TARGET, "-m", run_name, *folds, "--out", bundle)
        assert exported.exit_code == 0, exported.output
        out = tmp_path / name
        result = cli("-p", a, "predict", "--manifest", manifest, "--model", bundle, "--out", out, "--explain",
                     "--patches", 2, "--json")  # fmt: skip
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert len(report["outputs"]["pages"]) == len(test)
        items = {i["key"]: i for i in report["items"]}
        model = load_bundle_model(bundle, device=torch.device("cpu"))
        meta = json.loads((out / "meta.json").read_text())
        for pid in test:
            details = items[f"{pid}/explain"]["details"]
            assert any(Path(f).name == "transfer.png" for f in details["files"])
            files = [Path(f) for f in meta["slides"][pid].values()]
            slide_ids = list(meta["slides"][pid])
            page = np.concatenate([_geojson_attention(out / "patients" / pid, s)[0] for s in slide_ids])
            expected = np.mean([_independent_attention(m, files) for _, m in model.modules], axis=0)
            np.testing.assert_allclose(page, expected, rtol=1e-5, atol=1e-9)
            assert page.sum() == pytest.approx(1.0, abs=1e-6)
            if name == "one":
                mine = [r for r in coefficients if r["patient_id"] == pid]
                assert details["transfer"]["sources"] == [r["source"] for r in mine]
                np.testing.assert_allclose(details["transfer"]["w"], [float(r["w"]) for r in mine], atol=1e-6)
                np.testing.assert_allclose(
                    details["transfer"]["lambda"], [float(r["lambda"]) for r in mine], atol=1e-6
                )
                assert details["transfer"]["selected"] == [float(r["selected"]) > 0 for r in mine]
