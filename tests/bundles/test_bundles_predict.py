"""`stephctl export` then `stephctl predict` in another project: the same predictions, from raw slides.

Project A (tests/_bundle_project.py) is trained on synthetic slide-level TIFFs with tiny-cnn.
Project B is a fresh folder holding only a bundle and copies of some of A's slides: predict
must re-extract them the bundle's way and reproduce A's predictions to 1e-6.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _bundle_project import TARGET, project_a

from steph.bundles.container import read_bundle, write_bundle
from steph.config import load_project
from steph.data import feature_shape, load_cohort, load_split
from steph.fileio import read_csv, write_csv
from steph.predict import PatientCase
from steph.synthetic.tiff import write_pyramidal_tiff

pytestmark = pytest.mark.slow
RUN = "steph-top1"  # merge.top_k = 1 in project A


@pytest.fixture(scope="module")
def a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return project_a(tmp_path_factory)


def _export(cli, root: Path, out: Path, *args: object) -> Path:
    result = cli("-p", root, "export", "-t", TARGET, *args, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    return out


def _fresh_project_b(a: Path, dest: Path, patients: list[str], bundle: Path) -> Path:
    """A folder with only the bundle and copies of the slides of ``patients`` (+ a manifest)."""
    (dest / "slides").mkdir(parents=True)
    shutil.copy(bundle, dest / "model.safetensors")
    rows = []
    for row in read_csv(a / "slides" / "manifest.csv"):
        if row["patient_id"] in patients:
            shutil.copy(a / row["path"], dest / "slides" / Path(row["path"]).name)
            rows.append([row["patient_id"], row["slide_id"], f"slides/{Path(row['path']).name}"])
    write_csv(dest / "new.csv", ["patient_id", "slide_id", "path"], rows)
    return dest


def _hazards(rows: list[dict[str, str]], bins: int = 8) -> dict[str, np.ndarray]:
    return {r["patient_id"]: np.array([float(r[f"hazard_{j}"]) for j in range(1, bins + 1)]) for r in rows}


def _test_patients(a: Path, fold: int) -> list[str]:
    layout, config = load_project(a)
    return list(load_split(layout, load_cohort(layout, config, TARGET), fold).test)


@pytest.mark.parametrize("method", [RUN, "cancer-specific"])
def test_project_b_reproduces_project_a_from_raw_slides(a: Path, tmp_path: Path, cli, method: str) -> None:
    test = _test_patients(a, 0)
    bundle = _export(cli, a, tmp_path / "bundle.safetensors", "-m", method, "-k", 0)
    b = _fresh_project_b(a, tmp_path / "B", test, bundle)
    assert sorted(p.name for p in b.iterdir()) == ["model.safetensors", "new.csv", "slides"]
    result = cli(
        "-p", b, "predict", "--manifest", b / "new.csv", "--model", b / "model.safetensors", "--json"
    )
    assert result.exit_code == 0, result.output
    run = b / "predictions" / "model"
    assert (run / "features" / "tiny-cnn").is_dir()  # extracted in B, not copied from A
    mine = _hazards(read_csv(run / "predictions.csv"))
    reference_rows = read_csv(a / "results" / TARGET / method / "fold_0" / "predictions.csv")
    theirs = _hazards(reference_rows)
    assert set(mine) == set(test)
    worst = max(float(np.abs(mine[p] - theirs[p]).max()) for p in test)
    assert worst <= 1e-6, f"max |hazard difference| {worst:.2e}"
    risks = {r["patient_id"]: float(r["risk"]) for r in read_csv(run / "predictions.csv")}
    for row in reference_rows:
        assert risks[row["patient_id"]] == pytest.approx(float(row["risk"]), abs=1e-6)
    card = read_bundle(bundle).card
    cut = card["train_median_risk"]
    for row in read_csv(run / "predictions.csv"):
        assert row["risk_group"] == ("high" if float(row["risk"]) > cut else "low")
    survival = read_csv(run / "survival.csv")
    assert list(survival[0])[:3] == ["patient_id", "surv_365d", "surv_730d"]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["bundle_sha256"] == read_bundle(bundle).sha256 and meta["patients"] == len(test)
    again = cli("-p", b, "predict", "--manifest", b / "new.csv", "--model", b / "model.safetensors", "--json")
    assert json.loads(again.stdout)["items"][0]["status"] == "skipped"


def test_in_project_a_the_features_are_reused(a: Path, tmp_path: Path, cli) -> None:
    bundle = _export(cli, a, tmp_path / "bundle.safetensors", "-m", RUN, "-k", 0)
    manifest = tmp_path / "new.csv"
    rows = [r for r in read_csv(a / "slides" / "manifest.csv") if r["cancer"] == TARGET]
    write_csv(
        manifest,
        ["patient_id", "slide_id", "path"],
        [[r["patient_id"], r["slide_id"], r["path"]] for r in rows],
    )
    out = tmp_path / "run"
    result = cli("-p", a, "predict", "--manifest", manifest, "--model", bundle, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert not (out / "features").exists()
    project = cli(
        "-p", a, "predict", "--manifest", manifest, "-t", TARGET, "-m", RUN, "-k", 0, "--out", tmp_path / "p"
    )
    assert project.exit_code == 0, project.output
    from_bundle = _hazards(read_csv(out / "predictions.csv"))
    from_project = _hazards(read_csv(tmp_path / "p" / "predictions.csv"))
    assert from_bundle.keys() == from_project.keys()
    for pid, value in from_bundle.items():
        np.testing.assert_allclose(value, from_project[pid], atol=1e-6)
    # the old form `evaluate --predict` is gone (removed after its deprecation)
    old = cli("-p", a, "evaluate", "--predict", manifest, "-t", TARGET, "-m", RUN, "-k", 0, "--name", "old")
    assert old.exit_code == 1 and "--predict" in old.output
    # what `predict --explain` will get per patient: coordinates in bag order, one row per patch
    meta = json.loads((out / "meta.json").read_text())
    pid = rows[0]["patient_id"]
    files = tuple(Path(f) for f in meta["slides"][pid].values())
    case = PatientCase(pid, tuple(meta["slides"][pid]), files, (None,) * len(files))
    coords = case.coords()
    assert [c.shape for c in coords] == [(feature_shape(f)[0], 2) for f in files]


def test_all_folds_bundle_is_the_mean_of_the_fold_models(a: Path, tmp_path: Path, cli) -> None:
    ensemble = _export(cli, a, tmp_path / "all.safetensors", "-m", RUN, "--all-folds")
    card = read_bundle(ensemble).card
    assert card["ensemble"] and card["folds"] == [0, 1] and len(card["models"]) == 2
    assert card["train_median_risk"] == pytest.approx(
        np.mean([m["train_median_risk"] for m in card["models"]])
    )
    manifest = tmp_path / "new.csv"
    rows = [r for r in read_csv(a / "slides" / "manifest.csv") if r["cancer"] == TARGET]
    write_csv(manifest, ["patient_id", "slide_id"], [[r["patient_id"], r["slide_id"]] for r in rows])
    risks = {}
    for name, bundle in [("all", ensemble)] + [
        (f"f{k}", _export(cli, a, tmp_path / f"f{k}.safetensors", "-m", RUN, "-k", k)) for k in (0, 1)
    ]:
        result = cli("-p", a, "predict", "--manifest", manifest, "--model", bundle, "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
        risks[name] = {
            r["patient_id"]: float(r["risk"]) for r in read_csv(tmp_path / name / "predictions.csv")
        }
    for pid, value in risks["all"].items():
        assert value == pytest.approx((risks["f0"][pid] + risks["f1"][pid]) / 2, abs=1e-9)


def test_bad_items_fail_alone_with_the_fix_and_the_others_are_predicted(a: Path, tmp_path: Path, cli) -> None:
    bundle = _export(cli, a, tmp_path / "bundle.safetensors", "-m", RUN, "-k", 0)
    rows = [r for r in read_csv(a / "slides" / "manifest.csv") if r["cancer"] == TARGET][:3]
    no_mpp = tmp_path / "NOMPP-1.tif"
    write_pyramidal_tiff(no_mpp, tifffile.imread(a / rows[0]["path"], level=0), mpp=None)
    manifest = tmp_path / "new.csv"
    write_csv(
        manifest,
        ["patient_id", "slide_id", "path"],
        [
            [rows[0]["patient_id"], rows[0]["slide_id"], str(a / rows[0]["path"])],
            ["DUP-1", rows[1]["slide_id"], str(a / rows[1]["path"])],
            ["DUP-2", rows[1]["slide_id"], str(a / rows[1]["path"])],
            ["../etc", "S-1", str(a / rows[2]["path"])],
            ["NOMPP", "NOMPP-1", str(no_mpp)],
            ["NOFEAT", "NOFEAT-1", ""],
        ],
    )
    out = tmp_path / "run"
    result = cli("-p", tmp_path, "predict", "--manifest", manifest, "--model", bundle, "--out", out)
    assert result.exit_code == 2, result.output
    assert [r["patient_id"] for r in read_csv(out / "predictions.csv")] == [rows[0]["patient_id"]]
    failures = {r["patient_id"]: r for r in read_csv(out / "failures.csv")}
    assert set(failures) == {"DUP-1", "DUP-2", "../etc", "NOMPP", "NOFEAT"}
    assert "listed 2 times" in failures["DUP-1"]["error"] and "unique slide_id" in failures["DUP-2"]["hint"]
    assert "not a safe file name" in failures["../etc"]["error"]
    assert "NOMPP-1" in failures["NOMPP"]["error"] and "mpp" in failures["NOMPP"]["hint"].lower()
    assert "no features" in failures["NOFEAT"]["error"] and "path column" in failures["NOFEAT"]["hint"]
    # the same slide with its MPP given on the command line, as in extract
    fixed = tmp_path / "fixed.csv"
    write_csv(fixed, ["patient_id", "slide_id", "path"], [["NOMPP", "NOMPP-1", str(no_mpp)]])
    again = cli(
        "-p",
        tmp_path,
        "predict",
        "--manifest",
        fixed,
        "--model",
        bundle,
        "--out",
        tmp_path / "r2",
        "--mpp",
        0.5,
    )
    assert again.exit_code == 0, again.output


def test_missing_encoder_weights_name_the_file_and_features_still_predict(
    a: Path, tmp_path: Path, cli
) -> None:
    bundle = read_bundle(_export(cli, a, tmp_path / "bundle.safetensors", "-m", RUN, "-k", 0))
    card = dict(bundle.card)
    card["encoder"] = {**card["encoder"], "weights": f"sha256:{'ab' * 32} (pytorch_model.bin)"}
    other = tmp_path / "needs-weights.safetensors"
    write_bundle(other, "model", bundle.parts, {k: v for k, v in card.items() if k not in ("parts",)})
    rows = [r for r in read_csv(a / "slides" / "manifest.csv") if r["cancer"] == TARGET][:2]
    manifest = tmp_path / "new.csv"
    write_csv(
        manifest,
        ["patient_id", "slide_id", "path"],
        [
            [rows[0]["patient_id"], rows[0]["slide_id"], ""],
            [rows[1]["patient_id"], rows[1]["slide_id"], rows[1]["path"]],
        ],
    )
    result = cli("-p", a, "predict", "--manifest", manifest, "--model", other, "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    failure = read_csv(tmp_path / "run" / "failures.csv")[0]
    assert failure["patient_id"] == rows[1]["patient_id"]
    assert "pytorch_model.bin" in failure["error"] and "--encoder-weights" in failure["hint"]
    assert [r["patient_id"] for r in read_csv(tmp_path / "run" / "predictions.csv")] == [
        rows[0]["patient_id"]
    ]


def test_a_tampered_or_newer_bundle_stops_predict_with_one_line(a: Path, tmp_path: Path, cli) -> None:
    from safetensors.torch import load_file, save_file

    bundle = _export(cli, a, tmp_path / "bundle.safetensors", "-m", RUN, "-k", 0)
    from safetensors import safe_open

    with safe_open(str(bundle), framework="pt") as fh:
        meta = dict(fh.metadata())
    tensors = load_file(str(bundle))
    key = next(k for k in tensors if k.startswith("weights/"))
    tensors[key] = tensors[key] * 1.01
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata=meta)
    manifest = tmp_path / "new.csv"
    write_csv(manifest, ["patient_id", "slide_id"], [["P", "S"]])
    result = cli("-p", tmp_path, "predict", "--manifest", manifest, "--model", tmp_path / "t.safetensors")
    assert result.exit_code == 1
    assert "modified after export" in result.stderr and "weights/fold_0" in result.stderr
