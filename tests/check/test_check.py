"""`stephctl check` finds every planted problem, keeps going past each, and exits 0/1/2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from _cohorts import make_feature_project, write_features_h5
from _published import make_published_project

from steph.config import load_project
from steph.fileio import write_json
from steph.theta0 import create_theta0


def _rewrite_csv(path: Path, edit) -> None:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    rows = edit(rows)
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def _findings(cli, root: Path, *args: str) -> tuple[int, dict]:
    result = cli("-p", root, "check", "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def _errors(report: dict, check: str, cancer: str | None = None) -> list[str]:
    return [
        f["message"]
        for f in report["findings"]
        if f["level"] == "error" and f["check"] == check and (cancer is None or f["cancer"] == cancer)
    ]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_feature_project(tmp_path / "p")


def test_clean_project_passes(cli, project: Path) -> None:
    code, report = _findings(cli, project)
    assert code == 0 and report["ok"], report
    assert report["cancers"]["BRCA"] == {
        "labelled": 24,
        "in_splits": 24,
        "with_features": 24,
        "folds": [0, 1],
        "dim": 16,
        "evaluation_only": False,
    }
    text = cli("-p", project, "check")
    assert text.exit_code == 0 and "all checks passed" in text.output and "24 labelled" in text.output


def test_every_planted_problem_is_found(cli, project: Path) -> None:
    layout, config = load_project(project)
    brca_split = layout.split("BRCA", 0)
    leaked = next(iter(csv.DictReader(brca_split.open())))["train"]
    _rewrite_csv(brca_split, lambda rows: [*rows, ["", leaked]])
    _rewrite_csv(layout.split("BLCA", 1), lambda rows: [*rows, ["BLCA-P999", ""]])
    layout.features(config.encoder, "BRCA-P001-S0").unlink()
    write_features_h5(
        layout.features(config.encoder, "BLCA-P002-S0"), np.ones((4, 9)), encoder=config.encoder
    )
    write_features_h5(layout.features(config.encoder, "BRCA-P004-S0"), np.ones((4, 16)), encoder="conch_v15")
    nan = np.ones((4, 16))
    nan[1, 1] = np.nan
    write_features_h5(layout.features(config.encoder, "BLCA-P005-S0"), nan, encoder=config.encoder)
    # times that make no sense: a third cancer, a copy of BLCA whose labels record no event
    layout.labels("LUAD").write_text(
        layout.labels("BLCA").read_text().replace(",1\n", ",0\n").replace("BLCA", "LUAD")
    )
    for k in (0, 1):
        path = layout.split("LUAD", k)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(layout.split("BLCA", k).read_text().replace("BLCA", "LUAD"))
    # models and task vectors made from another theta0
    theta0 = create_theta0(layout, config, 16)
    layout.model_dir("BRCA", 0).mkdir(parents=True)
    write_json(
        layout.model_meta("BRCA", 0),
        {"theta0_sha256": "0" * 64, "model_sha256": "a" * 64, "encoder": config.encoder},
    )
    layout.task_vector("BRCA", 0).parent.mkdir(parents=True)
    write_json(
        layout.task_vector_meta("BRCA", 0),
        {"theta0_sha256": theta0.sha256, "source_model_sha256": "b" * 64},
    )
    data = yaml.safe_load(layout.config_file.read_text())
    data["cancers"] = ["BRCA", "BLCA", "LUAD"]
    layout.config_file.write_text(yaml.safe_dump(data))

    code, report = _findings(cli, project)
    assert code == 2 and not report["ok"]
    assert any(leaked in m and "fold 0" in m for m in _errors(report, "leakage", "BRCA"))
    assert any("BLCA-P999" in m for m in _errors(report, "split patients without labels", "BLCA"))
    assert any("BRCA-P001-S0" in m for m in _errors(report, "missing features", "BRCA"))
    assert any("D=9" in m for m in _errors(report, "feature dimension", "BLCA"))
    assert any("conch_v15" in m for m in _errors(report, "encoder", "BRCA"))
    assert any("no patient has an event" in m for m in _errors(report, "times/events", "LUAD"))
    assert any("trained from theta0 000000000000" in m for m in _errors(report, "models", "BRCA"))
    assert any("older model" in m for m in _errors(report, "task vectors", "BRCA"))
    assert not _errors(report, "NaN/inf")  # only --deep reads values
    assert report["cancers"]["BRCA"]["with_features"] == 22  # P001 missing, P004 wrong encoder
    code, deep = _findings(cli, project, "--deep")
    assert code == 2 and any("BLCA-P005-S0" in m for m in _errors(deep, "NaN/inf", "BLCA"))
    text = cli("-p", project, "check")
    assert text.exit_code == 2 and "check(s) failed" in text.output


def test_folds_smaller_than_the_batch_are_reported(cli, project: Path) -> None:
    code, report = _findings(cli, project, "--cancer", "BRCA")
    assert code == 0
    layout, _ = load_project(project)
    data = yaml.safe_load(layout.config_file.read_text())
    data["train"]["batch_size"] = 14  # 24 patients, 2 folds: 11-13 training patients per fold
    layout.config_file.write_text(yaml.safe_dump(data))
    code, report = _findings(cli, project, "--cancer", "BRCA")
    messages = _errors(report, "fold vs batch size", "BRCA")
    assert code == 2 and len(messages) == 2 and "fewer than train.batch_size 14" in messages[0]


def test_months_look_suspicious(cli, project: Path) -> None:
    layout, _ = load_project(project)

    def to_months(rows: list[list[str]]) -> list[list[str]]:
        return [rows[0]] + [[*r[:2], f"{float(r[2]) / 30.4375:.3f}", r[3]] for r in rows[1:]]

    _rewrite_csv(layout.labels("BRCA"), to_months)
    code, report = _findings(cli, project, "--cancer", "BRCA")
    warnings = [f for f in report["findings"] if f["level"] == "warning" and f["check"] == "times/events"]
    assert code == 0 and warnings and "labels.time_unit: months" in warnings[0]["hint"]


def test_a_broken_lmdb_does_not_stop_the_other_cancers(cli, tmp_path: Path) -> None:
    root, _ = make_published_project(tmp_path, "lmdb")
    store = tmp_path / "download" / "tcga_kipan.lmdb"
    import lmdb

    env = lmdb.open(str(store))
    with env.begin(write=True) as txn:
        txn.delete(b"__keys__")
    env.close()
    code, report = _findings(cli, root)
    assert code == 2
    assert any("no key '__keys__'" in m for m in _errors(report, "features", "KIPAN"))
    assert report["cancers"]["KIPAN"]["labelled"] == 12  # labels and splits were still checked
    assert any(f["check"] == "splits" and f["level"] == "ok" for f in report["findings"])


def test_no_project_is_a_user_error(cli, tmp_path: Path) -> None:
    result = cli("-p", tmp_path / "nothing", "check")
    assert result.exit_code == 1 and "not a stephctl project" in result.output


def test_nan_in_h5_is_found_only_by_deep(cli, project: Path) -> None:
    layout, config = load_project(project)
    with h5py.File(layout.features(config.encoder, "BRCA-P003-S0"), "a") as fh:
        fh["features"][0, 0] = np.inf
    assert _findings(cli, project)[0] == 0
    code, report = _findings(cli, project, "--deep")
    assert code == 2 and _errors(report, "NaN/inf", "BRCA")
