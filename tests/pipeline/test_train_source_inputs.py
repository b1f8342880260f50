"""Bad inputs to train-source: refused with a clear message before any training; a bad input of
one cancer fails that cancer's units and the others still train."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _cohorts import make_feature_project, write_features_h5

from steph.config import load_project
from steph.data import load_cohort, load_split
from steph.errors import ConsistencyError
from steph.fileio import read_json, write_csv, write_json
from steph.layout import CANCER_SPECIFIC
from steph.theta0 import create_theta0, ensure_theta0, load_theta0


def nothing_trained(root: Path) -> bool:
    return not any((root / "models").rglob("*.safetensors"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_feature_project(tmp_path / "p")


def test_bad_label_stops_before_training(cli, project: Path) -> None:
    labels = project / "labels" / "BLCA.csv"
    lines = labels.read_text().splitlines()
    lines[4] = lines[4].rsplit(",", 2)[0] + ",-5,1"
    labels.write_text("\n".join(lines) + "\n")
    result = cli("-p", project, "train-source", "--cancer", "BLCA", "--device", "cpu")
    assert result.exit_code == 1  # every unit to run fails on one input: one error, nothing written
    assert f"{labels}, row 5" in result.output and "t = '-5'" in result.output
    assert nothing_trained(project) and not (project / "models" / "null.json").exists()
    result = cli("-p", project, "train-source", "--json", "--device", "cpu")
    assert result.exit_code == 2  # the other cancer still trains
    items = {item["key"]: item for item in json.loads(result.stdout)["items"]}
    assert {k: v["status"] for k, v in items.items()} == {
        "BRCA/fold_0": "done",
        "BRCA/fold_1": "done",
        "BLCA/fold_0": "failed",
        "BLCA/fold_1": "failed",
    }
    assert (
        f"{labels}, row 5" in items["BLCA/fold_0"]["message"] and "hint:" in items["BLCA/fold_0"]["message"]
    )


def test_split_patient_unknown_stops_before_training(cli, project: Path) -> None:
    split = project / "splits" / "BRCA" / "splits_1.csv"
    split.write_text(split.read_text().replace("BRCA-P003", "BRCA-P999", 1))
    result = cli("-p", project, "train-source", "--cancer", "BRCA", "--fold", "1", "--device", "cpu")
    assert result.exit_code == 1 and "patient BRCA-P999 is not in the labels" in result.output
    assert nothing_trained(project)
    result = cli("-p", project, "train-source", "--cancer", "BRCA", "--json", "--device", "cpu")
    assert result.exit_code == 2  # a bad split fails its fold only
    items = {item["key"]: item for item in json.loads(result.stdout)["items"]}
    assert {k: v["status"] for k, v in items.items()} == {"BRCA/fold_0": "done", "BRCA/fold_1": "failed"}
    assert "patient BRCA-P999 is not in the labels" in items["BRCA/fold_1"]["message"]


def test_missing_features_listed_with_command(cli, project: Path) -> None:
    layout, config = load_project(project)
    gone = sorted(layout.features_dir(config.encoder).glob("BLCA-P01*.h5"))
    for path in gone:
        path.unlink()
    result = cli("-p", project, "train-source", "--cancer", "BLCA", "--device", "cpu")
    assert result.exit_code == 1
    assert f"{len(gone)} slide feature file(s) missing" in result.output
    assert all(p.stem in result.output for p in gone)
    assert "extract" in result.output and nothing_trained(project)
    result = cli("-p", project, "train-source", "--json", "--device", "cpu")
    assert result.exit_code == 2
    items = {item["key"]: item for item in json.loads(result.stdout)["items"]}
    assert [k for k, v in items.items() if v["status"] == "done"] == ["BRCA/fold_0", "BRCA/fold_1"]
    message = items["BLCA/fold_1"]["message"]
    assert f"{len(gone)} slide feature file(s) missing" in message and "extract" in message


def test_nan_features_fail_their_cancer_only(cli, project: Path) -> None:
    layout, config = load_project(project)
    bad = np.zeros((4, 16), dtype=np.float32)
    bad[1, 1] = np.nan
    write_features_h5(layout.own_features(config.encoder, "BLCA-P007-S0"), bad, encoder=config.encoder)
    result = cli("-p", project, "train-source", "--json", "--device", "cpu")
    assert result.exit_code == 2
    items = {item["key"]: item for item in json.loads(result.stdout)["items"]}
    assert {k: v["status"] for k, v in items.items()} == {
        "BRCA/fold_0": "done",
        "BRCA/fold_1": "done",
        "BLCA/fold_0": "failed",
        "BLCA/fold_1": "failed",
    }
    assert (
        "slide BLCA-P007-S0" in items["BLCA/fold_0"]["message"]
        and "NaN or inf" in items["BLCA/fold_0"]["message"]
    )


def test_feature_dims_differ_between_cancers(cli, tmp_path: Path) -> None:
    root = make_feature_project(tmp_path / "a", cancers=("BRCA",), dim=16)
    other = make_feature_project(tmp_path / "b", cancers=("BLCA",), dim=12)
    for name in ("labels", "splits", "features"):
        for path in (other / name).rglob("*"):
            if path.is_file():
                target = root / path.relative_to(other)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
    result = cli("-p", root, "train-source", "--cancer", "BRCA", "--cancer", "BLCA", "--device", "cpu")
    assert result.exit_code == 1 and "feature dimensions differ between cancers" in result.output
    assert "BRCA D=16" in result.output and "BLCA D=12" in result.output


def test_theta0_hash_mismatch_is_refused(cli, project: Path) -> None:
    layout, config = load_project(project)
    create_theta0(layout, config, 16)
    record = read_json(layout.theta0_meta)
    write_json(layout.theta0_meta, {**record, "sha256": "0" * 64})
    result = cli("-p", project, "train-source", "--device", "cpu")
    assert result.exit_code == 1 and "records 000000000000" in result.output
    with pytest.raises(ConsistencyError, match="sha256"):
        load_theta0(layout)
    assert not layout.model_weights("BRCA", 0).exists()


def test_theta0_dim_differs_from_features(project: Path) -> None:
    layout, config = load_project(project)
    create_theta0(layout, config, 20)
    with pytest.raises(ConsistencyError, match=r"dim_in 20 \(expected 16\)"):
        ensure_theta0(layout, config, 16)


def test_train_source_names_the_feature_file_whose_d_differs_from_theta0(cli, project: Path) -> None:
    """Issue #32: with theta0 in place, a feature file's D is checked against its dim_in from the
    header, and the one-line error names the file, the D found and the D expected."""
    layout, config = load_project(project)
    create_theta0(layout, config, 20)
    result = cli("-p", project, "train-source", "--cancer", "BRCA", "--device", "cpu")
    assert result.exit_code == 1, result.output
    assert f"features have D=16, theta0 {layout.theta0} takes D=20" in result.stderr
    assert str(layout.features_dir(config.encoder)) in result.stderr
    assert not layout.model_weights("BRCA", 0).exists()


def test_theta0_is_seeded_and_reused(project: Path) -> None:
    layout, config = load_project(project)
    first = ensure_theta0(layout, config, 16)
    again = ensure_theta0(layout, config, 16)
    assert again.sha256 == first.sha256 and again.meta["seed"] == config.seed
    recreated = create_theta0(layout, config, 16)
    assert recreated.sha256 == first.sha256  # same seed, same bytes
    _, other_seed = load_project(project, {"seed": 7})
    assert create_theta0(layout, other_seed, 16).sha256 != first.sha256
    assert torch.is_tensor(load_theta0(layout).state["feat_proj.0.weight"])


def test_fold_without_test_events_reports_undefined_c_index(cli, project: Path) -> None:
    layout, config = load_project(project)
    cohort = load_cohort(layout, config, "BRCA")
    test = set(load_split(layout, cohort, 0).test)
    rows = [
        [p.patient_id, sid, p.t, 0 if p.patient_id in test else p.e]
        for p in cohort.patients.values()
        for sid in p.slide_ids
    ]
    write_csv(layout.labels("BRCA"), ["patient_id", "slide_id", "t", "e"], rows)
    result = cli("-p", project, "train-source", "--cancer", "BRCA", "--fold", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "test C-index undefined" in result.output
    metrics = read_json(layout.result_metrics("BRCA", CANCER_SPECIFIC, 0))
    assert metrics["c_index"] is None and metrics["events"] == 0
    assert metrics["c_index_undefined_reason"] == "no events"
    assert read_json(layout.model_metrics("BRCA", 0))["history"][0]["test_c_index"] is None
