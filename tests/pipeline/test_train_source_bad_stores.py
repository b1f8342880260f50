"""A bad feature store or label file of one cancer fails that cancer only (issue #13, "Bad input"):
the other cancer trains, the run exits 2 and the report names the file or key and the fix."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml
from _cohorts import make_feature_project
from _published import write_lmdb

from steph.config import load_project
from steph.data import load_cohort
from steph.data.features import read_features


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def _lmdb_project(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    """Two cancers, each read from ``stores/{cancer}.lmdb`` in the reference's layout."""
    root = make_feature_project(tmp_path / "p")
    layout, config = load_project(root)
    stores = tmp_path / "stores"
    stores.mkdir()
    blca_rows: list[dict] = []
    for cancer in ("BRCA", "BLCA"):
        cohort = load_cohort(layout, config, cancer)
        rows = [
            {"slide_id": sid, "features": read_features(layout.own_features(config.encoder, sid)).numpy()}
            for patient in cohort.patients.values()
            for sid in patient.slide_ids
        ]
        write_lmdb(stores / f"{cancer}.lmdb", rows)
        blca_rows = rows
    data = yaml.safe_load(layout.config_file.read_text())
    data.setdefault("paths", {})["features"] = str(stores / "{cancer}.lmdb")
    layout.config_file.write_text(yaml.safe_dump(data))
    return root, stores / "BLCA.lmdb", blca_rows


def _break(kind: str, root: Path, store: Path, rows: list[dict]) -> list[str]:
    """Plant one bad input in BLCA; returns what the failure message must name."""
    import lmdb

    if kind == "no-keys":
        env = lmdb.open(str(store), map_size=1 << 26)
        with env.begin(write=True) as txn:
            txn.delete(b"__keys__")
        env.close()
        return [str(store), "__keys__", "hint:"]
    if kind == "truncated":
        data = (store / "data.mdb").read_bytes()
        (store / "data.mdb").write_bytes(data[:4096])
        return [str(store), "truncated"]
    if kind in ("forbidden-global", "not-a-tensor"):
        sid = rows[3]["slide_id"]
        bad = pickle.dumps(_Evil()) if kind == "forbidden-global" else pickle.dumps({"a": np.zeros(2)})
        for entry in store.iterdir():
            entry.unlink()
        write_lmdb(store, rows, {sid: bad})
        return [f"key {sid}]", "forbidden global" if kind == "forbidden-global" else "not a tensor"]
    assert kind == "label-column"
    labels = root / "labels" / "BLCA.csv"
    text = labels.read_text().splitlines()
    text[0] = text[0].replace(",t,", ",days,")
    labels.write_text("\n".join(text) + "\n")
    return [str(labels), "missing column(s) t (named by labels.time", "labels: block"]


@pytest.mark.parametrize("kind", ["no-keys", "truncated", "forbidden-global", "not-a-tensor", "label-column"])
def test_a_bad_input_fails_its_cancer_and_the_other_trains(cli, tmp_path: Path, kind: str) -> None:
    root, store, rows = _lmdb_project(tmp_path)
    named = _break(kind, root, store, rows)
    result = cli("-p", root, "train-source", "--json", "--device", "cpu")
    assert result.exit_code == 2, result.output
    items = {item["key"]: item for item in json.loads(result.stdout)["items"]}
    assert {k: v["status"] for k, v in items.items()} == {
        "BRCA/fold_0": "done",
        "BRCA/fold_1": "done",
        "BLCA/fold_0": "failed",
        "BLCA/fold_1": "failed",
    }
    for key in ("BLCA/fold_0", "BLCA/fold_1"):
        message = items[key]["message"]
        assert "\n" not in message and all(part in message for part in named), message
    layout, _ = load_project(root)
    assert all(layout.model_meta("BRCA", k).is_file() for k in (0, 1))
    assert not any(layout.model_meta("BLCA", k).exists() for k in (0, 1))


def test_only_bad_cancer_requested_is_one_error_exit_1(cli, tmp_path: Path) -> None:
    root, store, rows = _lmdb_project(tmp_path)
    named = _break("no-keys", root, store, rows)
    result = cli("-p", root, "train-source", "--cancer", "BLCA", "--device", "cpu")
    assert result.exit_code == 1
    assert all(part.replace("hint:", "") in result.output for part in named)
    assert not (root / "models" / "null.json").exists()


def test_project_template_without_project_column_fails_that_cancer(cli, tmp_path: Path) -> None:
    root = make_feature_project(tmp_path / "p")
    layout, config = load_project(root)
    features = layout.features_dir(config.encoder)
    data = yaml.safe_load(layout.config_file.read_text())
    data.setdefault("paths", {})["features"] = str(features / "{project}" / "{slide_id}.h5")
    layout.config_file.write_text(yaml.safe_dump(data))
    brca = root / "labels" / "BRCA.csv"  # BRCA gains a project column; BLCA has none
    lines = brca.read_text().splitlines()
    brca.write_text("\n".join([lines[0] + ",project", *(line + ",TCGA-BRCA" for line in lines[1:])]) + "\n")
    (features / "TCGA-BRCA").mkdir()
    for path in features.glob("BRCA-*.h5"):
        path.rename(features / "TCGA-BRCA" / path.name)
    result = cli("-p", root, "train-source", "--json", "--device", "cpu")
    assert result.exit_code == 2, result.output
    items = {item["key"]: item for item in json.loads(result.stdout)["items"]}
    assert [k for k, v in items.items() if v["status"] == "done"] == ["BRCA/fold_0", "BRCA/fold_1"]
    message = items["BLCA/fold_0"]["message"]
    assert "uses {project}" in message and str(root / "labels" / "BLCA.csv") in message and "hint:" in message


def test_different_bad_inputs_in_every_cancer_list_each_exit_2(cli, tmp_path: Path) -> None:
    root, store, rows = _lmdb_project(tmp_path)
    _break("no-keys", root, store, rows)
    brca = root / "labels" / "BRCA.csv"
    text = brca.read_text().splitlines()
    brca.write_text("\n".join([text[0].replace(",e", ",event"), *text[1:]]) + "\n")
    result = cli("-p", root, "train-source", "--json", "--device", "cpu")
    assert result.exit_code == 2, result.output
    items = {item["key"]: item for item in json.loads(result.stdout)["items"]}
    assert {v["status"] for v in items.values()} == {"failed"} and len(items) == 4
    assert "__keys__" in items["BLCA/fold_0"]["message"]
    assert str(brca) in items["BRCA/fold_1"]["message"] and "labels.event" in items["BRCA/fold_1"]["message"]
    assert not (root / "models" / "null.json").exists()
