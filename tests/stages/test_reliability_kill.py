"""Issue 16: the kill sweep. Each case runs a stage in a subprocess that SIGKILLs itself at a
named point (``STEPH_FAULT=kill@POINT``, :mod:`steph.faults`), then checks what the issue asks:

- the killed unit is not done (its record is missing) and status says so;
- readers do not take its outputs (evaluate fails a fold whose predictions have no record);
- a plain rerun reclaims the dead process's lock (no --clear-stale-locks needed), exits 0 and
  finishes the unit, with no lock left and no temporary file in the unit's folder.

The first case of each stage is fast; the other points are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from _cohorts import make_feature_project
from _hpc import finish, stephctl
from _merge_project import project_copy

from steph.config import load_project
from steph.fileio import TMP_PREFIX
from steph.hpc.status import project_status
from steph.layout import CANCER_SPECIFIC
from steph.locks import LOCK_SUFFIX

slow = pytest.mark.slow


def _killed(root: Path, point: str, *args: object) -> None:
    env = {**os.environ, "STEPH_FAULT": f"kill@{point}"}
    [(code, _, stderr)] = finish([stephctl(root, *args, env=env)], timeout=300)
    assert code == -signal.SIGKILL, stderr[-2000:]


def _no_locks(root: Path) -> None:
    assert not [p for p in root.rglob(f"*{LOCK_SUFFIX}")]


def _no_temp_files(folder: Path) -> None:
    assert not [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]


@pytest.mark.parametrize(
    "point",
    [
        "write:meta.json",
        pytest.param("write:model.safetensors", marks=slow),
        pytest.param("write:predictions.csv", marks=slow),
    ],
)
def test_kill_train_source(cli, tmp_path: Path, point: str) -> None:
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",))
    # theta0 first, so that the first meta.json written by the killed run is fold 0's
    assert cli("-p", root, "train-source", "--fold", "1", "--device", "cpu").exit_code == 0
    _killed(root, point, "train-source", "--device", "cpu")
    layout, config = load_project(root)
    assert not layout.model_meta("BRCA", 0).exists()
    status = project_status(layout, config).stage("train-source")
    assert (status.done, status.total) == (1, 2) and status.missing == ["BRCA/fold_0"]
    if layout.predictions("BRCA", CANCER_SPECIFIC, 0).exists():  # readers trust records only
        report = json.loads(cli("-p", root, "evaluate", "--bootstrap", "0", "--json").stdout)
        assert {i["key"]: i["status"] for i in report["items"]}["BRCA/cancer-specific/fold_0"] == "failed"
    tv = cli("-p", root, "task-vector", "--json")  # the cascade: no silent exit 0 without fold 0
    assert tv.exit_code == 2 and {i["key"]: i["status"] for i in json.loads(tv.stdout)["items"]} == {
        "BRCA/fold_0": "failed",
        "BRCA/fold_1": "done",
    }
    result = cli("-p", root, "train-source", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert layout.model_meta("BRCA", 0).is_file()
    _no_locks(root)
    _no_temp_files(layout.model_dir("BRCA", 0))
    assert cli("-p", root, "task-vector").exit_code == 0


@pytest.mark.parametrize(
    "point",
    ["task-vector:locked", pytest.param("write:fold_0.safetensors", marks=slow)],
)
def test_kill_task_vector(cli, tmp_path_factory, tmp_path: Path, point: str) -> None:
    root = project_copy(tmp_path_factory, tmp_path / "p")
    layout, config = load_project(root)
    _killed(root, point, "task-vector", "--cancer", "BRCA", "--overwrite")
    assert not layout.task_vector_meta("BRCA", 0).exists()
    assert "BRCA/fold_0" in project_status(layout, config).stage("task-vector").missing
    merge = cli("-p", root, "merge", "--target", "BRCA", "--json")  # no silent exit 0 either
    assert merge.exit_code == 2, merge.output
    assert {i["key"]: i["status"] for i in json.loads(merge.stdout)["items"]}["BRCA/steph/fold_0"] == "failed"
    result = cli("-p", root, "task-vector", "--json")
    assert result.exit_code == 0, result.output
    assert layout.task_vector_meta("BRCA", 0).is_file()
    _no_locks(root)
    _no_temp_files(layout.task_vector("BRCA", 0).parent)


@pytest.mark.parametrize(
    "point",
    [
        "write:meta.json",
        pytest.param("merge:locked", marks=slow),
        pytest.param("write:predictions.csv", marks=slow),
    ],
)
def test_kill_merge(cli, tmp_path_factory, tmp_path: Path, point: str) -> None:
    """Item 3 through a real kill: the predictions of the killed fold exist without its record."""
    root = project_copy(tmp_path_factory, tmp_path / "p")
    layout, config = load_project(root)
    _killed(root, point, "merge", "--target", "BRCA")
    record = layout.merged_file("BRCA", "steph", 0, "meta.json")
    assert not record.exists()
    assert "BRCA/steph/fold_0" in project_status(layout, config).stage("merge").missing
    if layout.predictions("BRCA", "steph", 0).exists():
        report = json.loads(
            cli("-p", root, "evaluate", "--target", "BRCA", "--bootstrap", "0", "--json").stdout
        )
        status = {i["key"]: i["status"] for i in report["items"]}
        # both folds were asked for and neither is done: the killed one and the one never reached
        assert status["BRCA/steph/fold_0"] == "failed" and status["BRCA/steph/fold_1"] == "failed"
        assert [m["method"] for m in report["summary"]["targets"]["BRCA"]] == [CANCER_SPECIFIC]
    result = cli("-p", root, "merge", "--target", "BRCA", "--json")
    assert result.exit_code == 0, result.output
    assert [i["status"] for i in json.loads(result.stdout)["items"]] == ["done", "done"]
    _no_locks(root)
    _no_temp_files(layout.merged_dir("BRCA", "steph", 0))


def test_kill_evaluate_while_writing_the_summary(cli, tmp_path_factory, tmp_path: Path) -> None:
    root = project_copy(tmp_path_factory, tmp_path / "p")
    layout, _ = load_project(root)
    _killed(root, "write:summary.csv", "evaluate", "--bootstrap", "0")
    assert not layout.summary.exists()
    assert (layout.summary.parent / (layout.summary.name + LOCK_SUFFIX)).exists()  # left by the kill
    result = cli("-p", root, "evaluate", "--bootstrap", "0", "--json")
    assert result.exit_code == 0, result.output
    assert layout.summary.is_file()
    _no_locks(root)
    _no_temp_files(layout.summary.parent)
