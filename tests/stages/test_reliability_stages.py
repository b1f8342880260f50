"""Issue 16, items 4, 7 and 8a: stages re-check after locking, refuse untrainable folds, and
turn a full disk into one failed item while the others go on.

A full disk is injected with ``STEPH_FAULT=enospc@write:<file>`` (the atomic write of that file
raises ENOSPC once, see :mod:`steph.faults`) or, where the machine allows the mount, a tiny tmpfs.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from _cohorts import make_feature_project
from _hpc import set_config
from _merge_project import project_copy

import steph.pipeline.merge as merge_module
import steph.units as units_module
from steph.config import load_project
from steph.pipeline.merge import merge_models
from steph.report import Status


def _items(result) -> dict[str, dict]:
    return {item["key"]: item for item in json.loads(result.stdout)["items"]}


def test_merge_skips_a_unit_another_process_finished(tmp_path_factory, tmp_path, monkeypatch) -> None:
    """Item 4: merge re-checks after taking the lock (two merges 3 s apart both said 'fold_1 done')."""
    root = project_copy(tmp_path_factory, tmp_path / "p")
    layout, config = load_project(root)
    assert merge_models(layout, config, target="BRCA", folds=[1]).ok
    meta = layout.merged_file("BRCA", "steph", 1, "meta.json")
    record = meta.read_bytes()
    meta.unlink()  # as planned by the second process: not done yet
    real_hold = units_module.hold  # the stage's unit loop takes the lock
    trained = []

    @contextlib.contextmanager
    def other_process_finishes_first(output, **kwargs):
        meta.write_bytes(record)  # the first process wrote its record and released the lock
        with real_hold(output, **kwargs) as path:
            yield path

    monkeypatch.setattr(units_module, "hold", other_process_finishes_first)

    def train_again(self, unit):
        trained.append(unit)
        return {"c_index": None}

    monkeypatch.setattr(merge_module.MergeWorker, "_train", train_again)
    report = merge_models(layout, config, target="BRCA", folds=[1])
    assert [(i.key, i.status) for i in report.items] == [("BRCA/steph/fold_1", Status.SKIPPED)]
    assert "done by another process" in report.items[0].message and not trained
    assert meta.read_bytes() == record


def test_fold_with_fewer_patients_than_a_batch_fails_before_training(cli, tmp_path, tmp_path_factory) -> None:
    """Item 7: 12 training patients and batch 16 gave '2 epochs of 0 steps' and a model equal to
    theta0 recorded as done; now the unit fails before training with the setting to change."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",), n_patients=24, folds=2)
    set_config(root, {"train.batch_size": 16})
    result = cli("-p", root, "train-source", "--json", "--device", "cpu")
    assert result.exit_code == 2, result.output
    for item in _items(result).values():
        assert item["status"] == "failed"
        assert "0 optimiser steps" in item["message"] and "train.batch_size" in item["message"]
    layout, config = load_project(root)
    assert not layout.model_meta("BRCA", 0).exists() and not layout.model_weights("BRCA", 0).exists()
    # merge's target fold: the same check before training
    merged = project_copy(tmp_path_factory, tmp_path / "m")
    layout, config = load_project(merged, {"train.batch_size": 64})
    report = merge_models(layout, config, target="BRCA")
    assert [i.status for i in report.items] == [Status.FAILED, Status.FAILED]
    assert all("0 optimiser steps" in i.message for i in report.items)
    assert not layout.merged_file("BRCA", "steph", 0, "meta.json").exists()


def test_full_disk_fails_one_train_source_item_and_the_rest_go_on(cli, tmp_path, monkeypatch) -> None:
    """Item 8a (train-source): ENOSPC was 'OSError: [Errno 28]' aborting the whole run."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",))
    monkeypatch.setenv("STEPH_FAULT", "enospc@write:meta.json")
    result = cli("-p", root, "train-source", "--json", "--device", "cpu")
    assert result.exit_code == 2, result.output
    items = _items(result)
    assert items["BRCA/fold_0"]["status"] == "failed" and items["BRCA/fold_1"]["status"] == "done"
    assert "No space left on device" in items["BRCA/fold_0"]["message"]
    assert "free disk space" in items["BRCA/fold_0"]["message"]
    assert "Traceback" not in result.output
    monkeypatch.delenv("STEPH_FAULT")
    result = cli("-p", root, "train-source", "--json", "--device", "cpu")
    assert result.exit_code == 0 and _items(result)["BRCA/fold_0"]["status"] == "done"


def test_full_disk_in_task_vector_merge_and_evaluate(cli, tmp_path_factory, tmp_path, monkeypatch) -> None:
    """Item 8a (task-vector, merge, evaluate): one failed item each, exit 2, no traceback."""
    root = project_copy(tmp_path_factory, tmp_path / "p")
    monkeypatch.setenv("STEPH_FAULT", "enospc@write:fold_0.json")
    result = cli("-p", root, "task-vector", "--cancer", "BRCA", "--overwrite", "--json")
    assert result.exit_code == 2, result.output
    items = _items(result)
    assert items["BRCA/fold_0"]["status"] == "failed" and items["BRCA/fold_1"]["status"] == "done"
    assert "No space left on device" in items["BRCA/fold_0"]["message"]
    monkeypatch.setenv("STEPH_FAULT", "")
    assert cli("-p", root, "task-vector", "--cancer", "BRCA").exit_code == 0

    monkeypatch.setenv("STEPH_FAULT", "enospc@write:predictions.csv")
    result = cli("-p", root, "merge", "--target", "BRCA", "--json")
    assert result.exit_code == 2, result.output
    items = _items(result)
    assert items["BRCA/steph/fold_0"]["status"] == "failed" and items["BRCA/steph/fold_1"]["status"] == "done"
    assert "No space left on device" in items["BRCA/steph/fold_0"]["message"]

    monkeypatch.setenv("STEPH_FAULT", "enospc@write:summary.csv")
    result = cli("-p", root, "evaluate", "--target", "BRCA", "--bootstrap", "0", "--json")
    assert result.exit_code == 2, result.output
    document = json.loads(result.stdout)
    failed = [i for i in document["items"] if i["status"] == "failed"]
    # fold 0 of steph was never merged (the full disk above): asked for, not done, also a failure
    assert [i["key"] for i in failed] == ["BRCA/steph/fold_0", "summary.csv"]
    assert "No space left" in failed[1]["message"]
    assert "Traceback" not in result.output


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); the patched-write tests cover ENOSPC")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=10)


def test_full_tmpfs_fails_items_then_a_rerun_finishes(cli, tmp_path) -> None:
    """Item 8a on a real full disk: models/ on a tmpfs filled up after the first fold."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",))
    layout, _ = load_project(root)
    with _tmpfs(layout.models_root, "1m"):
        assert cli("-p", root, "train-source", "--fold", "0", "--device", "cpu").exit_code == 0
        filler = layout.models_root / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        result = cli("-p", root, "train-source", "--json", "--device", "cpu")
        assert result.exit_code == 2, result.output
        item = _items(result)["BRCA/fold_1"]
        assert item["status"] == "failed" and "No space left on device" in item["message"]
        assert "Traceback" not in result.output and not layout.model_meta("BRCA", 1).exists()
        filler.unlink()
        result = cli("-p", root, "train-source", "--json", "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert layout.model_meta("BRCA", 1).is_file()
        assert cli("-p", root, "task-vector").exit_code == 0  # every file is valid
        shutil.rmtree(layout.models_root / "BRCA")


def test_a_project_that_trains_some_folds_is_done_when_those_are(tmp_path: Path) -> None:
    """`train.folds: [0]` with two split files: every later stage expects fold 0 only, so the
    chain exits 0; the untrained fold 1 fails nowhere (it was never asked for)."""
    from steph.pipeline.evaluate import evaluate_models
    from steph.pipeline.task_vector import compute_task_vectors
    from steph.pipeline.train_source import train_source_models

    root = make_feature_project(tmp_path / "p", cancers=("BRCA", "BLCA"), n_patients=40, dim=8, folds=2)
    set_config(root, {"train.folds": [0], "train.epochs": 1, "train.device": "cpu", "merge.epochs": 1})
    layout, config = load_project(root)
    assert train_source_models(layout, config).ok
    vectors = compute_task_vectors(layout, config)
    assert vectors.ok and {i.key for i in vectors.items} == {"BRCA/fold_0", "BLCA/fold_0"}
    merged = merge_models(layout, config, target="BRCA", methods=["model-avg"])
    assert merged.ok and [i.key for i in merged.items] == ["BRCA/model-avg/fold_0"]
    evaluated = evaluate_models(layout, config, targets=["BRCA"], bootstrap=10)
    assert evaluated.ok, [(i.key, i.status, i.message) for i in evaluated.items]
    assert not any(i.status is Status.FAILED for i in evaluated.items)
