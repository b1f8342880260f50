"""``stephctl merge`` trains a method's folds together (``train.stack_units``) with each fold's own result."""

from __future__ import annotations

from pathlib import Path

import pytest
from _merge_project import project_copy

from steph.config import load_project
from steph.fileio import read_csv, read_json
from steph.pipeline.merge import merge_models
from steph.report import Status

METHODS = ["adamerging", "ties-adamerging", "roupkt", "steph", "task-arithmetic"]
"""Four methods whose folds stack and one that trains nothing (each fold alone)."""


def merged(root: Path, stack: bool) -> dict[str, object]:
    layout, config = load_project(root, {"train.stack_units": stack, "train.epochs": 3, "merge.top_k": 3})
    report = merge_models(layout, config, target="BRCA", methods=METHODS)
    assert [i.status for i in report.items] == [Status.DONE] * 10
    out: dict[str, object] = {}
    for run in ("adamerging", "ties-adamerging", "roupkt-top3", "steph-top3", "task-arithmetic"):
        for fold in (0, 1):
            meta = read_json(layout.merged_meta("BRCA", run, fold))
            out[f"{run}/{fold}/losses"] = meta["train_losses"]
            out[f"{run}/{fold}/with"] = meta["trained_with"]
            out[f"{run}/{fold}/risk"] = [
                float(r["risk"]) for r in read_csv(layout.predictions("BRCA", run, fold))
            ]
            if run.endswith("adamerging"):
                rows = read_csv(layout.merged_file("BRCA", run, fold, "task_weights.csv"))
                out[f"{run}/{fold}/weights"] = [float(r["weight"]) for r in rows]
            if run.startswith("roupkt"):
                rows = read_csv(layout.merged_file("BRCA", run, fold, "routing.csv"))
                out[f"{run}/{fold}/routing"] = [float(r["p"]) for r in rows]
            if run.startswith("steph"):
                rows = read_csv(layout.merged_file("BRCA", run, fold, "coefficients.csv"))
                out[f"{run}/{fold}/coefficients"] = [
                    float(r[k]) for r in rows for k in ("w", "lambda", "selected")
                ]
    return out


def test_stacked_folds_write_what_each_fold_writes_alone(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    alone = merged(project_copy(tmp_path_factory, tmp_path / "alone"), stack=False)
    together = merged(project_copy(tmp_path_factory, tmp_path / "together"), stack=True)
    for key, value in alone.items():
        if key.endswith("/with"):
            continue
        assert together[key] == pytest.approx(value, abs=1e-6, rel=1e-6), key
    assert together["adamerging/0/with"] == ["BRCA/adamerging/fold_1"]
    assert together["ties-adamerging/1/with"] == ["BRCA/ties-adamerging/fold_0"]
    assert together["roupkt-top3/0/with"] == ["BRCA/roupkt-top3/fold_1"]
    assert together["steph-top3/1/with"] == ["BRCA/steph-top3/fold_0"]
    assert together["task-arithmetic/0/with"] == [] and alone["adamerging/0/with"] == []


def test_folds_whose_stacked_loss_diverges_train_one_by_one(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-finite loss in a stacked run (``UnitsDiverged``) sends the folds to train alone:
    each then writes what it writes alone, and names no other fold."""
    import steph.pipeline.merge as pipeline
    from steph.training.stacked import UnitsDiverged

    def diverging(*args: object, **kwargs: object) -> list[list[float]]:
        raise UnitsDiverged([1], 2)

    monkeypatch.setattr(pipeline, "fit_stacked", diverging)
    alone = merged(project_copy(tmp_path_factory, tmp_path / "alone"), stack=False)
    fallback = merged(project_copy(tmp_path_factory, tmp_path / "fallback"), stack=True)
    assert fallback == alone


def test_paper_rows_stack_where_they_can_and_write_what_each_fold_writes_alone(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """``merge --paper``: every row but Surgery AM's and STEPH's ``fnn`` (not in the set) trains
    its two folds together, each fold's files as alone (losses and test risks, to 1e-6)."""
    results = {}
    for stack in (False, True):
        root = project_copy(tmp_path_factory, tmp_path / str(stack))
        layout, config = load_project(root, {"train.stack_units": stack, "train.epochs": 2, "merge.top_k": 3})
        report = merge_models(layout, config, target="BRCA", paper=True)
        assert report.ok
        rows = {}
        for item in report.items:
            run, fold = item.key.split("/")[1], int(item.key.rsplit("_", 1)[1])
            meta = read_json(layout.merged_meta("BRCA", run, fold))
            risk = [float(r["risk"]) for r in read_csv(layout.predictions("BRCA", run, fold))]
            rows[item.key] = (meta["train_losses"], risk, meta["trained_with"])
        results[stack] = rows
    alone, together = results[False], results[True]
    assert alone.keys() == together.keys() and len(alone) == 32
    for key, (losses, risk, _) in alone.items():
        assert together[key][0] == pytest.approx(losses, abs=1e-6, rel=1e-6), key
        assert together[key][1] == pytest.approx(risk, abs=1e-6, rel=1e-6), key
    stacked = {key.split("/")[1] for key, row in together.items() if row[2]}
    assert {k.split("/")[1] for k in alone} - stacked == {
        "model-avg",
        "surgery-adamerging",
        "surgery-adamerging-hypernet",
    }
