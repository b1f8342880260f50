"""Typed run records: same JSON keys and order as ever, unknown keys kept, file names in layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from steph.errors import DataError
from steph.layout import RECORD_FILE, PredictionLayout, ProjectLayout
from steph.records import MERGE_SIGNATURE, MergeRecord, ModelRecord, PredictionRecord, TaskVectorRecord

MERGE_KEYS = [
    "method", "options", "sources", "source_fold", "epochs", "seed", "theta0_sha256", "run", "target", "fold",
    "label", "top_k", "gamma_selection", "vector_sha256", "dim_in", "model_config", "merge_config", "files",
    "tables", "trainable_parameters", "train_losses", "train_seconds", "device", "n_train", "n_test", "c_index",
    "versions", "created", "source_choice",
]  # fmt: skip


def test_merge_record_keys_and_order_are_those_stephctl_wrote() -> None:
    data = {key: None for key in MERGE_KEYS}
    data.update(method="steph", sources=["LUAD"], source_fold=0, seed=1, theta0_sha256="a", dim_in=8)
    data.update(vector_sha256={}, model_config={}, merge_config={}, files={}, future_key=1)
    record = MergeRecord.from_json(data)
    assert list(record.to_json()) == [*MERGE_KEYS, "future_key"] and record.to_json() == data
    assert list(record.signature()) == list(MERGE_SIGNATURE) and record.extra == {"future_key": 1}
    with pytest.raises(DataError, match="missing merge_config"):
        MergeRecord.from_json({k: v for k, v in data.items() if k != "merge_config"}, "meta.json")


def test_model_record_keeps_stage_extras_before_the_config() -> None:
    data = {
        "cancer": "BRCA", "fold": 0, "n_train": 10, "n_test": 3, "encoder": "tiny-cnn", "architecture": {},
        "theta0_sha256": "a", "model_sha256": "b", "seed": 1, "device": "cpu", "versions": {},
        "epochs": 2, "steps_per_epoch": 5, "config": {"seed": 1},
    }  # fmt: skip
    record = ModelRecord.from_json(data)
    assert record.extra == {"epochs": 2, "steps_per_epoch": 5}
    assert list(record.to_json()) == list(data) and record.to_json() == data


def test_task_vector_and_prediction_records_round_trip(tmp_path: Path) -> None:
    vector = {
        "kind": "task_vector", "cancer": "BRCA", "fold": 1, "theta0_sha256": "a", "source_model": "m",
        "source_model_sha256": "b", "architecture": {}, "sha256": "c", "parameter_names": ["w"],
        "versions": {}, "created": "now", "imported": {"part_sha256": "d"},
    }  # fmt: skip
    path = TaskVectorRecord.from_json(vector).write(tmp_path / "fold_1.json")
    assert list(TaskVectorRecord.read(path).to_json().items()) == list(vector.items())
    prediction = {
        "target": "BRCA", "method": "steph", "fold": 0, "signature": {"model": {}}, "manifest": None,
        "patients": 2, "failed": [], "slides": {}, "train_median_risk": 0.5, "encoder": "tiny-cnn",
        "encoder_weights": None, "versions": {}, "explain": {"pages": []},
    }  # fmt: skip
    record = PredictionRecord.from_json(prediction)
    assert record.identity == {"target": "BRCA", "method": "steph", "fold": 0}
    assert list(record.to_json().items()) == list(prediction.items())
    without = {k: v for k, v in prediction.items() if k != "explain"}
    assert list(PredictionRecord.from_json(without).to_json()) == list(without)


def test_layout_owns_the_record_file_names(tmp_path: Path) -> None:
    layout = ProjectLayout(tmp_path)
    assert layout.merged_meta("BRCA", "steph", 0) == layout.merged_dir("BRCA", "steph", 0) / RECORD_FILE
    assert layout.result_record("BRCA", "steph", 0) == layout.merged_meta("BRCA", "steph", 0)
    assert layout.model_meta("BRCA", 0).name == RECORD_FILE == PredictionLayout(tmp_path).meta.name
    assert layout.task_vector_meta("BRCA", 2).name == "fold_2.json"


def test_old_import_paths_still_work() -> None:
    from steph.merging import MERGE_METHODS, MergeContext  # noqa: F401
    from steph.merging.registry import MERGE_METHODS as REGISTRY
    from steph.pipeline.task_vector import load_task_vector as old
    from steph.task_vectors import load_task_vector

    assert old is load_task_vector and MERGE_METHODS is REGISTRY
