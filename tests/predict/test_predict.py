"""Prediction on new patients, and evaluate on the real outputs of train-source and merge.

The project is the shared tiny trained project of the merge tests (6 cancers x 2 folds, D = 16)
after ``merge --target BRCA --method steph --fold 0``. Predicting the test patients of fold 0
must reproduce the hazards that train-source and merge wrote to results/ for those patients.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _merge_project import project_copy

from steph.config import load_project
from steph.data import load_cohort, load_split
from steph.errors import ConfigError, ConsistencyError, DataError, MissingArtifactError
from steph.fileio import read_csv, write_csv
from steph.pipeline.evaluate import evaluate_models
from steph.pipeline.merge import merge_models
from steph.predict import predict_patients, read_manifest
from steph.report import Status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = project_copy(tmp_path_factory, tmp_path_factory.mktemp("evaluate-merged") / "p")
    layout, config = load_project(root)
    assert merge_models(layout, config, target="BRCA", methods=["steph"], folds=[0]).ok
    return root


def _manifest(root: Path, patients: list[str]) -> Path:
    layout, config = load_project(root)
    cohort = load_cohort(layout, config, "BRCA")
    rows = [[pid, sid] for pid in patients for sid in cohort.patients[pid].slide_ids]
    path = root / "new_patients.csv"
    write_csv(path, ["patient_id", "slide_id"], rows)
    return path


@pytest.mark.parametrize("method", ["cancer-specific", "steph"])
def test_prediction_reproduces_the_test_set_predictions(merged: Path, cli, method: str) -> None:
    layout, config = load_project(merged)
    test = list(load_split(layout, load_cohort(layout, config, "BRCA"), 0).test)
    manifest = _manifest(merged, test)
    result = cli(
        "-p", merged, "predict", "--manifest", manifest, "-t", "BRCA", "-m", method, "-k", 0, "--json"
    )
    assert result.exit_code == 0, result.output
    out = layout.predict_dir(f"BRCA_{method}_fold_0")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "predictions.csv", "survival.csv"]
    predicted = {r["patient_id"]: r for r in read_csv(out / "predictions.csv")}
    reference = {r["patient_id"]: r for r in read_csv(layout.predictions("BRCA", method, 0))}
    assert set(predicted) == set(test)
    for pid in test:
        mine = np.array([float(predicted[pid][f"hazard_{j}"]) for j in range(1, 33)])
        theirs = np.array([float(reference[pid][f"hazard_{j}"]) for j in range(1, 33)])
        np.testing.assert_allclose(mine, theirs, atol=1e-6)
        assert float(predicted[pid]["risk"]) == pytest.approx(float(reference[pid]["risk"]), abs=1e-5)
        assert predicted[pid]["risk_group"] in {"low", "high"}
    survival = read_csv(out / "survival.csv")
    assert list(survival[0])[:3] == ["patient_id", "surv_365d", "surv_730d"]
    curve = np.array([float(v) for k, v in survival[0].items() if k != "patient_id"])
    assert np.all(np.diff(curve) <= 0) and 0 < curve[0] <= 1
    meta = json.loads((out / "meta.json").read_text())
    assert meta["method"] == method and meta["patients"] == len(test)
    again = cli(
        "-p", merged, "predict", "--manifest", manifest, "-t", "BRCA", "-m", method, "-k", 0, "--json"
    )
    assert json.loads(again.stdout)["items"][0]["status"] == "skipped"


def test_a_patient_alone_gets_the_same_prediction(merged: Path) -> None:
    """One forward pass per patient: batching with other patients changes nothing."""
    layout, config = load_project(merged)
    test = list(load_split(layout, load_cohort(layout, config, "BRCA"), 0).test)
    kwargs = {"target": "BRCA", "method": "steph", "fold": 0}
    predict_patients(layout, config, _manifest(merged, test), name="all", **kwargs)
    predict_patients(layout, config, _manifest(merged, test[:1]), name="one", **kwargs)
    both = read_csv(layout.predict_file("all", "predictions.csv"))[0]
    alone = read_csv(layout.predict_file("one", "predictions.csv"))[0]
    assert both["patient_id"] == alone["patient_id"]
    assert float(both["risk"]) == pytest.approx(float(alone["risk"]), abs=1e-6)


def test_prediction_errors_name_what_is_missing(merged: Path, tmp_path: Path) -> None:
    layout, config = load_project(merged)
    manifest = _manifest(merged, ["BRCA-P000"])
    with pytest.raises(MissingArtifactError, match="no finished merge"):
        predict_patients(layout, config, manifest, target="BRCA", method="steph", fold=1)
    bad = tmp_path / "bad.csv"
    bad.write_text("patient,slide\nA,B\n")
    with pytest.raises(DataError, match="patient_id and slide_id"):
        read_manifest(bad)
    missing = tmp_path / "missing.csv"
    missing.write_text("patient_id,slide_id\nNEW-1,NEW-1-S0\n")
    predict_patients(layout, config, manifest, target="BRCA", method="cancer-specific", fold=0, name="dup")
    with pytest.raises(ConfigError, match="another model or manifest"):
        predict_patients(layout, config, missing, target="BRCA", method="cancer-specific", fold=0, name="dup")
    with pytest.raises(MissingArtifactError, match="stephctl"):
        predict_patients(layout, config, missing, target="BRCA", method="cancer-specific", fold=0, name="new")
    other = load_project(merged, {"model.time_bins": 16})[1]
    with pytest.raises(ConsistencyError, match=r"model\.time_bins = 16 but the weights have 32"):
        predict_patients(layout, other, manifest, target="BRCA", method="cancer-specific", fold=0, name="x")


def test_evaluate_reads_the_real_train_source_and_merge_outputs(merged: Path) -> None:
    layout, config = load_project(merged, {"evaluate.report": True})
    report = evaluate_models(layout, config, targets=["BRCA"], bootstrap=20)
    assert report.count(Status.DONE) == 3  # cancer-specific folds 0, 1 + steph fold 0
    assert [i.key for i in report.failed] == ["BRCA/steph/fold_1"]  # asked for, never merged
    assert report.summary is not None
    steph = report.summary.per_target["BRCA"]["steph"]
    assert steph.partial and steph.missing_folds == [1]
    assert layout.report_file("BRCA", "coefficients-steph.png").is_file()
    recorded = json.loads(layout.result_metrics("BRCA", "steph", 0).read_text())["c_index"]
    fold0 = next(r for r in report.summary.folds if r.predictions.method == "steph")
    assert fold0.metrics["c_index"].value == pytest.approx(recorded, abs=1e-12)
