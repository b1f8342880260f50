"""Typed run records: same JSON keys and order as ever, unknown keys kept, file names in layout."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from steph.errors import DataError
from steph.layout import RECORD_FILE, PredictionLayout, ProjectLayout
from steph.records import (
    MERGE_SIGNATURE,
    MergeRecord,
    ModelRecord,
    PredictionRecord,
    Record,
    SplitsRecord,
    TaskVectorRecord,
    TransferRecord,
)

MERGE_KEYS = [
    "method", "options", "sources", "source_fold", "epochs", "seed", "theta0_sha256", "run", "target", "fold",
    "label", "top_k", "gamma_selection", "vector_sha256", "dim_in", "model_config", "merge_config", "files",
    "tables", "trainable_parameters", "train_losses", "train_seconds", "device", "n_train", "n_test", "c_index",
    "versions", "created", "source_choice", "trained_with",
]  # fmt: skip


def test_merge_record_keys_and_order_are_those_stephctl_wrote() -> None:
    data = {key: None for key in MERGE_KEYS}
    data.update(method="steph", sources=["LUAD"], source_fold=0, seed=1, theta0_sha256="a", dim_in=8)
    data.update(vector_sha256={}, model_config={}, merge_config={}, files={}, future_key=1)
    data.update(
        options={}, tables=[], train_losses=[], versions={}, trained_with=[]
    )  # typed: null is refused
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


GOOD_SPLITS = {"cancer": "BRCA", "folds": 5, "seed": 1, "val_fraction": 0.1, "stratified_by": ["event"]}
GOOD_TRANSFER = {
    "target": "BRCA", "sources": ["LUAD"], "folds": [0, 1], "pairs": [{"source": "LUAD", "c": 0.6}],
    "bootstrap": 10, "confidence": 0.95, "models": {"LUAD/fold_0": "ab"},
}  # fmt: skip
GOOD_MERGE = {
    "method": "steph", "sources": ["LUAD"], "source_fold": 0, "seed": 1, "theta0_sha256": "a",
    "vector_sha256": {"LUAD/fold_0": "b"}, "dim_in": 8, "model_config": {}, "merge_config": {},
    "files": {"merged.safetensors": "c"}, "train_losses": [0.5, 1], "c_index": 0.7,
}  # fmt: skip


def test_an_imported_task_vector_keeps_its_keys_and_order(tmp_path: Path) -> None:
    """What ``import-sources`` wrote before its fields were typed reads into them and writes back
    the same JSON; a vector of this project's own writes none of them."""
    imported = {
        "kind": "task_vector", "cancer": "BLCA", "fold": 0, "theta0_sha256": "a", "architecture": {},
        "sha256": "c", "parameter_names": ["w"], "cohort_size": 150, "train_patients": {"0": 120},
        "imported_from": {"bundle_sha256": "e", "part_sha256": "d"}, "versions": {}, "created": "now",
    }  # fmt: skip
    path = tmp_path / "fold_0.json"
    path.write_text(json.dumps(imported))
    record = TaskVectorRecord.read(path)
    assert record.imported and record.cohort_size == 150 and record.train_patients == {"0": 120}
    assert record.imported_from == {"bundle_sha256": "e", "part_sha256": "d"} and record.extra == {}
    assert list(record.to_json().items()) == list(imported.items())
    own = TaskVectorRecord(cancer="BRCA", fold=0, source_model="m")
    assert not own.imported and not {"cohort_size", "train_patients", "imported_from"} & set(own.to_json())


BAD_RECORDS = [
    # (record class, good record, field, bad value, words the message must hold)
    (ModelRecord, {"cancer": "BRCA"}, "fold", "0", ["'fold'", "an integer or null", "a string ('0')"]),
    (ModelRecord, {"cancer": "BRCA"}, "fold", True, ["'fold'", "an integer or null", "a boolean (true)"]),
    (ModelRecord, {"cancer": "BRCA"}, "cancer", 3, ["'cancer'", "a string or null", "an integer (3)"]),
    (ModelRecord, {"cancer": "BRCA"}, "versions", [], ["'versions'", "an object", "a list"]),
    (ModelRecord, {"cancer": "BRCA"}, "architecture", ["dim_in"], ["'architecture'", "an object or null"]),
    (TaskVectorRecord, {"cancer": "BRCA"}, "parameter_names", {"w": 1}, ["'parameter_names'", "a list of (a string)", "an object"]),
    (TaskVectorRecord, {"cancer": "BRCA"}, "parameter_names", ["w", 2], ["'parameter_names[1]'", "a string", "an integer (2)"]),
    (TaskVectorRecord, {"cancer": "BRCA"}, "cohort_size", "150", ["'cohort_size'", "an integer or null", "a string ('150')"]),
    (TaskVectorRecord, {"cancer": "BRCA"}, "train_patients", {"0": "120"}, ["'train_patients.0'", "an integer or null", "a string ('120')"]),
    (TaskVectorRecord, {"cancer": "BRCA"}, "imported_from", "bundle.safetensors", ["'imported_from'", "an object or null", "a string"]),
    (MergeRecord, GOOD_MERGE, "source_fold", 0.0, ["'source_fold'", "an integer", "a number (0.0)"]),
    (MergeRecord, GOOD_MERGE, "train_losses", [0.5, False], ["'train_losses[1]'", "a number", "a boolean (false)"]),
    (MergeRecord, GOOD_MERGE, "c_index", "0.7", ["'c_index'", "a number or null", "a string ('0.7')"]),
    (MergeRecord, GOOD_MERGE, "vector_sha256", {"LUAD/fold_0": None}, ["'vector_sha256.LUAD/fold_0'", "a string", "null"]),
    (MergeRecord, GOOD_MERGE, "sources", "LUAD", ["'sources'", "a list of (a string)", "a string ('LUAD')"]),
    (MergeRecord, GOOD_MERGE, "method", None, ["'method'", "a string", "null"]),
    (SplitsRecord, GOOD_SPLITS, "folds", "5", ["'folds'", "an integer", "a string ('5')"]),
    (SplitsRecord, GOOD_SPLITS, "val_fraction", True, ["'val_fraction'", "a number", "a boolean (true)"]),
    (SplitsRecord, GOOD_SPLITS, "stratified_by", [["event"]], ["'stratified_by[0]'", "a string", "a list"]),
    (TransferRecord, GOOD_TRANSFER, "evaluation_only", 1, ["'evaluation_only'", "true or false", "an integer (1)"]),
    (TransferRecord, GOOD_TRANSFER, "folds", [0, "1"], ["'folds[1]'", "an integer", "a string ('1')"]),
    (TransferRecord, GOOD_TRANSFER, "pairs", {"LUAD": {}}, ["'pairs'", "a list of (an object)", "an object"]),
    (TransferRecord, GOOD_TRANSFER, "pairs", [["LUAD"]], ["'pairs[0]'", "an object", "a list"]),
    (TransferRecord, GOOD_TRANSFER, "models", {"LUAD/fold_0": 7}, ["'models.LUAD/fold_0'", "a string", "an integer (7)"]),
    (PredictionRecord, {"target": "BRCA", "signature": {}}, "patients", "2", ["'patients'", "an integer", "a string ('2')"]),
    (PredictionRecord, {"target": "BRCA", "signature": {}}, "slides", {"P1": ["s.h5"]}, ["'slides.P1'", "an object of (a string)", "a list"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "good", "key", "bad", "words"),
    BAD_RECORDS,
    ids=[f"{row[0].__name__}-{row[2]}-{type(row[3]).__name__}" for row in BAD_RECORDS],
)
def test_from_json_refuses_a_value_of_the_wrong_type(
    cls: type[Record], good: dict[str, Any], key: str, bad: object, words: list[str], tmp_path: Path
) -> None:
    """Each bad value is refused with a DataError naming the file, the field, the expected and the
    found type; the same record with its good value reads back."""
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(good))
    assert cls.read(path).to_json() == cls.from_json(good).to_json()
    path.write_text(json.dumps({**good, key: bad}))
    with pytest.raises(DataError) as caught:
        cls.read(path)
    message = str(caught.value)
    assert str(path) in message and caught.value.hint and "--overwrite" in caught.value.hint
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@dataclass(frozen=True, kw_only=True)
class Part(Record):
    KIND: ClassVar[str] = "part"
    name: str
    size: int = 0


@dataclass(frozen=True, kw_only=True)
class Whole(Record):
    KIND: ClassVar[str] = "whole"
    main: Part | None = None
    parts: list[Part] = field(default_factory=list)
    by_name: dict[str, Part] = field(default_factory=dict)


def test_from_json_reads_nested_records_and_checks_inside_them() -> None:
    """A field typed as a record is read as that record (checked field by field, unknown keys
    kept) and written back as its object."""
    data = {
        "main": {"name": "a", "size": 1, "later": True},
        "parts": [{"name": "b"}],
        "by_name": {"c": {"name": "c", "size": 3}},
    }
    whole = Whole.from_json(data, "whole.json")
    assert isinstance(whole.main, Part) and whole.main.extra == {"later": True}
    assert whole.parts == [Part(name="b")] and whole.by_name["c"].size == 3
    assert whole.to_json() == {**data, "parts": [{"name": "b", "size": 0}]}
    assert Whole.from_json({"main": None}).main is None
    for bad, words in [
        ({"main": {"name": "a", "size": "1"}}, ["'main.size'", "an integer", "a string ('1')"]),
        ({"parts": [{"size": 1}]}, ["'parts[0].name'", "a string", "the key is missing"]),
        ({"by_name": {"c": {"name": "c", "size": False}}}, ["'by_name.c.size'", "a boolean (false)"]),
        ({"main": "a"}, ["'main'", "a part object or null", "a string ('a')"]),
    ]:
        with pytest.raises(DataError) as caught:
            Whole.from_json(bad, "whole.json")
        assert "whole.json" in str(caught.value)
        for word in words:
            assert word in str(caught.value), f"{word!r} not in {caught.value}"


def test_from_json_keeps_the_json_numbers_it_was_given() -> None:
    """An integer where a number is declared is a number (JSON has no float/int distinction)."""
    record = MergeRecord.from_json({**GOOD_MERGE, "c_index": 1, "train_seconds": 2})
    assert record.c_index == 1 and record.to_json()["train_seconds"] == 2


def test_metrics_json_is_read_through_its_record(tmp_path: Path) -> None:
    """results/.../metrics.json: written and read by MetricsRecord (keys and order as ever, the
    unset optional keys left out); a value of the wrong type is refused, naming the field."""
    from steph.evaluation.inputs import train_median_risk
    from steph.records import MetricsRecord

    written = {"c_index": None, "n": 3, "events": 0, "c_index_undefined_reason": "no events"}
    written.update(method="steph", run="steph-top2", fold=1)
    assert list(MetricsRecord.from_json(written).to_json().items()) == list(written.items())
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"c_index": 0.6, "n": 3, "events": 1, "train_median_risk": 0.25}))
    assert train_median_risk(path) == 0.25
    path.write_text(json.dumps({"c_index": 0.6, "train_median_risk": "0.25"}))
    with pytest.raises(DataError, match="'train_median_risk' must be a number or null, found a string"):
        train_median_risk(path)


def test_a_theta0_record_of_the_wrong_type_is_refused_naming_the_field(tmp_path: Path) -> None:
    from steph.errors import ConsistencyError
    from steph.theta0 import load_theta0, theta0_dim_in

    layout = ProjectLayout(tmp_path)
    layout.theta0.parent.mkdir(parents=True)
    layout.theta0.write_bytes(b"not read: the record is checked first")
    layout.theta0_meta.write_text(json.dumps({"sha256": 5, "architecture": {"dim_in": 8}}))
    with pytest.raises(
        ConsistencyError, match=r"theta0 record field 'sha256' must be a string, found an integer"
    ):
        load_theta0(layout)
    layout.theta0_meta.write_text(json.dumps({"sha256": "ab", "architecture": {"dim_in": 8}}))
    assert theta0_dim_in(layout) == 8
