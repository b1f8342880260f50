"""`stephctl explain` on a trained feature-level project: pages, STEPH bars, per-item errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import pytest
from _merge_project import project_copy
from _slides import write_manifest

from steph.config import load_project
from steph.layout import ProjectLayout
from steph.pipeline.merge import merge_models

RUN = "steph-top2"


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = project_copy(tmp_path_factory, tmp_path_factory.mktemp("explain") / "p")
    layout, config = load_project(root, {"merge.top_k": 2})
    assert merge_models(layout, config, target="BRCA", methods=["steph"], folds=[0]).ok
    assert layout.merged_file("BRCA", RUN, 0, "coefficients.csv").is_file()
    return root


def _copy(merged: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(merged, dest)
    return dest


def _coefficients(layout: ProjectLayout, patient: str) -> list[dict[str, str]]:
    with layout.merged_file("BRCA", RUN, 0, "coefficients.csv").open() as fh:
        return [row for row in csv.DictReader(fh) if row["patient_id"] == patient]


def test_top_patients_get_pages_whose_steph_bars_are_the_runs_coefficients(
    merged: Path, tmp_path: Path, cli
) -> None:
    root = _copy(merged, tmp_path / "p")
    layout = ProjectLayout(root)
    result = cli(
        "-p",
        root,
        "explain",
        "-t",
        "BRCA",
        "-m",
        RUN,
        "-k",
        0,
        "--top",
        1,
        "--compare",
        "cancer-specific",
        "--json",
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    items = document["items"]
    with layout.predictions("BRCA", RUN, 0).open() as fh:
        risks = {row["patient_id"]: float(row["risk"]) for row in csv.DictReader(fh)}
    highest, lowest = max(risks, key=risks.get), min(risks, key=risks.get)
    assert [item["key"].rsplit("/", 1)[1] for item in items] == [highest, lowest]
    for item, pid in zip(items, (highest, lowest), strict=True):
        assert item["status"] == "done"
        details = item["details"]
        assert details["risk"] == pytest.approx(
            risks[pid], abs=1e-5
        )  # the same model as the fold's predictions
        files = [Path(f) for f in details["files"]]
        assert all(f.is_file() for f in files)
        assert layout.patient_page("BRCA", pid, RUN, 0) in files
        assert not any(f.name == "patches.png" for f in files)  # features only: no montage
        assert any("features only" in n for n in details["notices"])
        rows = _coefficients(layout, pid)
        bars = details["transfer"]
        assert bars["sources"] == [r["source"] for r in rows]
        assert bars["w"] == pytest.approx([float(r["w"]) for r in rows], abs=1e-12)
        assert bars["lambda"] == pytest.approx([float(r["lambda"]) for r in rows], abs=1e-12)
        assert bars["selected"] == [r["selected"] == "1" for r in rows]
        geo = json.loads(next(f for f in files if f.suffix == ".geojson").read_text())
        measured = [f["properties"]["measurements"] for f in geo["features"]]
        assert sum(m["Attention"] for m in measured) <= 1.0 + 1e-5
        assert all("Attention (cancer-specific)" in m for m in measured)
    index = layout.patients_index("BRCA")
    assert index.is_file() and highest in index.read_text()
    evaluated = cli("-p", root, "evaluate", "-t", "BRCA", "--bootstrap", 0, "--json")
    # exit 2: fold 1 of the run was never merged (asked for, not done); the report is still written
    assert evaluated.exit_code == 2, evaluated.output
    assert 'href="patients/index.html"' in layout.report_file("BRCA", "report.html").read_text()

    again = cli(
        "-p",
        root,
        "explain",
        "-t",
        "BRCA",
        "-m",
        RUN,
        "-k",
        0,
        "--top",
        1,
        "--compare",
        "cancer-specific",
        "--json",
    )
    assert again.exit_code == 0
    assert [i["status"] for i in json.loads(again.stdout)["items"]] == ["skipped", "skipped"]


def test_bad_items_fail_alone_and_exit_2(merged: Path, tmp_path: Path, cli) -> None:
    root = _copy(merged, tmp_path / "p")
    layout, config = load_project(root)
    with layout.predictions("BRCA", RUN, 0).open() as fh:
        patients = [row["patient_id"] for row in csv.DictReader(fh)][:3]
    good, no_coords, no_slide = patients
    slide = layout.own_features(config.encoder, f"{no_coords}-S0")
    with h5py.File(slide, "a") as fh:
        del fh["coords"]
    write_manifest(
        root,
        [{"slide_id": f"{no_slide}-S0", "patient_id": no_slide, "cancer": "BRCA", "path": "slides/gone.svs"}],
    )
    args = ["-p", root, "explain", "-t", "BRCA", "-m", "cancer-specific", "-k", 0, "--json"]
    result = cli(*args, "-P", good, "-P", "NOBODY", "-P", no_coords, "-P", no_slide)
    assert result.exit_code == 2, result.output
    items = {i["key"].rsplit("/", 1)[1]: i for i in json.loads(result.stdout)["items"]}
    assert items[good]["status"] == "done" and "transfer" not in items[good]["details"]
    assert items["NOBODY"]["status"] == "failed" and "not in" in items["NOBODY"]["message"]
    assert items[no_coords]["status"] == "failed" and "coords" in items[no_coords]["message"]
    assert "stephctl extract --overwrite" in items[no_coords]["message"]
    missing = items[no_slide]
    assert missing["status"] == "failed" and "gone.svs" in missing["message"]
    names = {Path(f).name for f in missing["details"]["files"]}
    assert f"heatmap-{no_slide}-S0.png" in names and "patches.png" not in names  # only the montage is skipped
    rerun = cli(*args, "-P", good, "-P", no_slide)
    statuses = {i["key"].rsplit("/", 1)[1]: i["status"] for i in json.loads(rerun.stdout)["items"]}
    assert statuses == {good: "skipped", no_slide: "failed"}  # an unfinished page is redone


def test_untrained_method_or_fold_is_one_line_error(merged: Path, cli) -> None:
    result = cli("-p", merged, "explain", "-t", "BRCA", "-m", "ties", "-k", 0, "--top", 1)
    assert result.exit_code == 1
    assert "no run of method 'ties'" in result.output and RUN in result.output  # the runs there are
    assert "stephctl merge" in result.output
    result = cli("-p", merged, "explain", "-t", "BRCA", "-m", RUN, "-k", 1, "--top", 1)
    assert result.exit_code == 1 and "no trained fold 1" in result.output
    result = cli("-p", merged, "explain", "-t", "BRCA", "-m", RUN, "-k", 0)
    assert result.exit_code == 1 and "--top" in result.output


def test_feature_files_are_checked_before_they_are_read(
    merged: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #32: explain checks each feature file's D (against theta0's dim_in) and patch count
    (against max_patches) from its header before reading it; before, it read the file whole and
    then compared D with the model's, and max_patches was not applied. Each fails alone."""
    import numpy as np
    import yaml
    from _cohorts import write_features_h5

    import steph.explain.stage as stage

    root = _copy(merged, tmp_path / "p")
    layout, config = load_project(root)
    with layout.predictions("BRCA", RUN, 0).open() as fh:
        good, wide, long = [row["patient_id"] for row in csv.DictReader(fh)][:3]
    limit = int(h5py.File(layout.own_features(config.encoder, f"{good}-S0"), "r")["features"].shape[0])
    wide_file = layout.own_features(config.encoder, f"{wide}-S0")
    write_features_h5(wide_file, np.ones((4, 12)), encoder=config.encoder)
    write_features_h5(
        layout.own_features(config.encoder, f"{long}-S0"), np.ones((limit + 5, 16)), encoder=config.encoder
    )
    settings = yaml.safe_load((root / "stephctl.yaml").read_text())
    (root / "stephctl.yaml").write_text(yaml.safe_dump({**settings, "max_patches": limit}, sort_keys=False))
    read: list[str] = []
    original = stage.read_slide_patches
    monkeypatch.setattr(
        stage, "read_slide_patches", lambda path, sid: read.append(sid) or original(path, sid)
    )
    args = ["-p", root, "explain", "-t", "BRCA", "-m", "cancer-specific", "-k", 0, "--json"]
    result = cli(*args, "-P", good, "-P", wide, "-P", long)
    assert result.exit_code == 2, result.output
    items = {i["key"].rsplit("/", 1)[1]: i for i in json.loads(result.stdout)["items"]}
    assert items[good]["status"] == "done"
    assert f"{wide_file}: features have D=12, theta0 {layout.theta0} takes D=16" in items[wide]["message"]
    assert f"declare {limit + 5:,} patches, more than max_patches ({limit:,})" in items[long]["message"]
    assert read == [f"{good}-S0"]
