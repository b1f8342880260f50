"""`stephctl predict` reads a project's features through a ``paths.features`` template with
``{project}``: each slide's project comes from the project's labels, as in training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from _cohorts import make_feature_project

from steph.config import load_project
from steph.data import load_cohort, load_split
from steph.fileio import read_csv, write_csv

PROJECTS = ("TCGA-AAA", "TCGA-BBB")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cancer whose slides sit in per-project folders, trained through the template."""
    root = make_feature_project(tmp_path_factory.mktemp("predict-project") / "p", cancers=("BRCA",))
    layout, config = load_project(root)
    features = layout.features_dir(config.encoder)
    labels = layout.labels("BRCA")
    rows = read_csv(labels)
    for i, row in enumerate(rows):
        row["project"] = PROJECTS[i % 2]
        (features / row["project"]).mkdir(exist_ok=True)
        (features / f"{row['slide_id']}.h5").rename(features / row["project"] / f"{row['slide_id']}.h5")
    write_csv(
        labels,
        ["patient_id", "slide_id", "project", "t", "e"],
        [[r[k] for k in ("patient_id", "slide_id", "project", "t", "e")] for r in rows],
    )
    data = yaml.safe_load(layout.config_file.read_text())
    data.setdefault("paths", {})["features"] = str(features / "{project}" / "{slide_id}.h5")
    layout.config_file.write_text(yaml.safe_dump(data))
    return root


def test_predict_fills_project_from_the_labels(trained: Path, cli) -> None:
    result = cli("-p", trained, "train-source", "--fold", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    layout, config = load_project(trained)
    cohort = load_cohort(layout, config, "BRCA")
    test = list(load_split(layout, cohort, 0).test)
    manifest = trained / "new.csv"
    write_csv(
        manifest,
        ["patient_id", "slide_id"],
        [[pid, sid] for pid in test for sid in cohort.patients[pid].slide_ids],
    )
    args = ("-p", trained, "predict", "--manifest", manifest, "-t", "BRCA", "-m", "cancer-specific", "-k", 0)
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    assert {item["status"] for item in json.loads(result.stdout)["items"]} == {"done"}
    predicted = {
        r["patient_id"]: float(r["risk"])
        for r in read_csv(layout.predict_file("BRCA_cancer-specific_fold_0", "predictions.csv"))
    }
    reference = {
        r["patient_id"]: float(r["risk"]) for r in read_csv(layout.predictions("BRCA", "cancer-specific", 0))
    }
    assert set(predicted) == set(test)
    for pid in test:  # the same bags as training's test set: the same risks
        assert predicted[pid] == pytest.approx(reference[pid], abs=1e-5)


def test_a_slide_without_a_project_in_the_labels_fails_alone(trained: Path, cli) -> None:
    layout, config = load_project(trained)
    if not layout.model_meta("BRCA", 0).is_file():
        assert cli("-p", trained, "train-source", "--fold", "0", "--device", "cpu").exit_code == 0
    cohort = load_cohort(layout, config, "BRCA")
    pid, patient = next(iter(cohort.patients.items()))
    manifest = trained / "unknown.csv"
    write_csv(manifest, ["patient_id", "slide_id"], [[pid, patient.slide_ids[0]], ["NEW-1", "NEW-1-S0"]])
    args = ("-p", trained, "predict", "--manifest", manifest, "-t", "BRCA", "-m", "cancer-specific", "-k", 0)
    result = cli(*args, "--name", "unknown", "--json")
    assert result.exit_code == 2, result.output
    items = {item["key"]: item for item in json.loads(result.stdout)["items"]}
    assert items[pid]["status"] == "done" and items["NEW-1"]["status"] == "failed"
    assert "slide NEW-1-S0: paths.features uses {project}" in items["NEW-1"]["message"]
