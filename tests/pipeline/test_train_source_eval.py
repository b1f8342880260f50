"""train.eval_every: no test-split pass during training by default; every N epochs on request."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _cohorts import make_feature_project

import steph.pipeline._source_model as source_model
from steph.config import load_project
from steph.fileio import read_json
from steph.pipeline.train_source import train_source_models


def train(root: Path, monkeypatch: pytest.MonkeyPatch, **train_settings: object) -> list[int]:
    config_file = root / "stephctl.yaml"
    data = yaml.safe_load(config_file.read_text())
    data["train"].update({"epochs": 4, **train_settings})
    config_file.write_text(yaml.safe_dump(data))
    calls: list[int] = []
    original = source_model._c_index

    def counting(model, targets, ctx):  # type: ignore[no-untyped-def]
        calls.append(len(targets))
        return original(model, targets, ctx)

    monkeypatch.setattr(source_model, "_c_index", counting)
    layout, config = load_project(root)
    report = train_source_models(layout, config, cancers=["BRCA"], folds=[0], overwrite=True)
    assert report.ok
    return calls


def test_default_evaluates_the_test_split_only_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",))
    assert train(root, monkeypatch) == []
    layout, _ = load_project(root)
    metrics = read_json(layout.model_metrics("BRCA", 0))
    assert [h["test_c_index"] for h in metrics["history"][:-1]] == [None, None, None]
    assert metrics["history"][-1]["test_c_index"] == metrics["c_index"]
    log_text = layout.model_log("BRCA", 0).read_text()
    assert "epoch 1/4 train_loss" in log_text and "epoch 4/4 test_c_index" in log_text
    assert "epoch 1/4 train_loss" in log_text.split("test_c_index")[0]


def test_eval_every_two_evaluates_during_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",))
    calls = train(root, monkeypatch, eval_every=2)
    assert len(calls) == 1  # epoch 2; epoch 4 is the final evaluation, computed once
    layout, _ = load_project(root)
    history = read_json(layout.model_metrics("BRCA", 0))["history"]
    assert history[0]["test_c_index"] is None and history[2]["test_c_index"] is None
    assert "epoch 2/4 train_loss" in layout.model_log("BRCA", 0).read_text().split("epoch 3/4")[0]
