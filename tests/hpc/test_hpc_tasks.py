"""Task lists: counts match the layout, one unit runs by index, shards cover every slide once."""

from __future__ import annotations

from pathlib import Path

import pytest
from _cohorts import make_feature_project
from _slides import row, write_manifest

from steph.config import load_project
from steph.config.project import Project
from steph.errors import ConfigError, UnknownNameError
from steph.report import Status
from steph.stages import (
    EvaluateSelection,
    ExtractSelection,
    MergeSelection,
    TaskVectorSelection,
    TrainSourceSelection,
    get_stage,
    plan,
    stage_names,
    task_index_from_env,
)

CANCERS = ("BRCA", "BLCA", "LUNG")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_feature_project(
        tmp_path_factory.mktemp("tasks") / "p", cancers=CANCERS, n_patients=12, folds=3
    )


def test_builtin_stages() -> None:
    assert stage_names() == ["extract", "train-source", "task-vector", "merge", "evaluate", "transfer"]
    with pytest.raises(UnknownNameError, match="train-source"):
        get_stage("train")


def test_counts_match_layout(project: Path) -> None:
    layout, config = load_project(project)
    p = Project(layout, config)
    folds = {c: layout.split_folds(c) for c in CANCERS}
    expected = [f"{c}/fold_{k}" for c in CANCERS for k in folds[c]]
    assert [u.key for u in plan(p, TrainSourceSelection())] == expected
    # task vectors are listed before any model exists: arrays can be generated up front
    assert [u.key for u in plan(p, TaskVectorSelection())] == expected
    assert [u.key for u in plan(p, TrainSourceSelection(cancers=["blca"], folds=[2]))] == ["BLCA/fold_2"]
    merges = plan(p, MergeSelection(target="BRCA", methods=["model-avg", "task-arithmetic"]))
    assert [u.key for u in merges] == [
        f"BRCA/{m}/fold_{k}" for k in folds["BRCA"] for m in ("model-avg", "task-arithmetic")
    ]
    assert [u.key for u in plan(p, EvaluateSelection())] == list(CANCERS)
    with pytest.raises(ConfigError, match="target"):
        plan(p, MergeSelection())


def test_run_one_unit_by_index(project: Path) -> None:
    layout, config = load_project(project)
    p = Project(layout, config)
    train, vectors = get_stage("train-source"), get_stage("task-vector")
    report = train.run_task(p, 4, TrainSourceSelection())
    assert [(i.key, i.status) for i in report.items] == [("BLCA/fold_1", Status.DONE)]
    assert report.outputs["task"] == {"index": 4, "key": "BLCA/fold_1", "of": 9}
    trained = sorted(str(p.relative_to(layout.models_root)) for p in layout.models_root.glob("*/fold_*"))
    assert trained == ["BLCA/fold_1"]
    again = train.run_task(p, 4, TrainSourceSelection())
    assert [(i.key, i.status) for i in again.items] == [("BLCA/fold_1", Status.SKIPPED)]
    vector = vectors.run_task(p, 4, TaskVectorSelection())
    assert [(i.key, i.status) for i in vector.items] == [("BLCA/fold_1", Status.DONE)]
    assert layout.task_vector_meta("BLCA", 1).is_file()
    with pytest.raises(ConfigError, match="out of range: train-source has 9 tasks"):
        train.run_task(p, 9, TrainSourceSelection())


def test_task_index_from_env() -> None:
    assert task_index_from_env({}) is None
    assert task_index_from_env({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "3"}) == 7
    with pytest.raises(ConfigError):
        task_index_from_env({"SLURM_ARRAY_TASK_ID": "x"})


def test_extract_shards_cover_every_slide_once(empty_project: Path) -> None:
    ids = [f"S{i:02d}" for i in range(23)]
    write_manifest(
        empty_project,
        [row(sid, f"slides/{sid}.tif", cancer="BLCA" if i % 3 else "BRCA") for i, sid in enumerate(ids)],
    )
    layout, config = load_project(empty_project, {"slurm.slides_per_task": 5})
    p = Project(layout, config)
    units = plan(p, ExtractSelection())
    assert [u.key for u in units] == [f"shard_{i}_of_5" for i in range(5)]
    assert get_stage("extract").pins(units) == ["--num-shards", "5"]
    outputs = [p for u in units for p in u.outputs]
    assert sorted(outputs) == sorted(layout.own_features(config.encoder, sid) for sid in ids)
    assert sum(u.slides for u in units) == len(ids)
    brca = plan(p, ExtractSelection(cancers=["BRCA"], num_shards=2))
    assert [u.slides for u in brca] == [4, 4]
