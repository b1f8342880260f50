"""`stephctl train-source` end to end on a tiny synthetic cohort: files, theta0, determinism, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _cohorts import make_feature_project

from steph.checkpoints import load_state_dict
from steph.config import load_project
from steph.fileio import read_csv, read_json, sha256_file
from steph.layout import CANCER_SPECIFIC
from steph.locks import lock_path_for, release, try_acquire
from steph.pipeline.train_source import plan_train_source

MODEL_FILES = ("config.yaml", "meta.json", "metrics.json", "model.safetensors", "train.log")


def files_under(root: Path, *tops: str) -> set[str]:
    return {str(p.relative_to(root)) for top in tops for p in (root / top).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project trained once through the CLI (2 cancers x 2 folds), shared read-only by tests."""
    from typer.testing import CliRunner

    from stephctl.main import app

    root = make_feature_project(tmp_path_factory.mktemp("trained") / "p")
    result = CliRunner().invoke(app, ["-p", str(root), "train-source", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    (root / "report.json").write_text(result.stdout)
    return root


def test_cli_run_writes_exactly_the_layout(trained: Path) -> None:
    layout, _ = load_project(trained)
    expected = {"models/null.safetensors", "models/null.json"}
    for cancer in ("BRCA", "BLCA"):
        for fold in (0, 1):
            expected |= {
                str(layout.model_dir(cancer, fold).relative_to(trained) / name) for name in MODEL_FILES
            }
            expected |= {
                str(layout.predictions(cancer, CANCER_SPECIFIC, fold).relative_to(trained)),
                str(layout.result_metrics(cancer, CANCER_SPECIFIC, fold).relative_to(trained)),
            }
    assert files_under(trained, "models", "results") == expected
    logs = files_under(trained, "logs")
    assert len(logs) == 1 and next(iter(logs)).startswith("logs/train-source-")
    report = json.loads((trained / "report.json").read_text())
    assert report["ok"] and report["counts"]["done"] == 4
    assert report["outputs"]["theta0_sha256"] == sha256_file(layout.theta0)


def test_outputs_content(trained: Path) -> None:
    layout, config = load_project(trained)
    meta = read_json(layout.model_meta("BRCA", 1))
    assert meta["theta0_sha256"] == read_json(layout.theta0_meta)["sha256"] == sha256_file(layout.theta0)
    assert meta["model_sha256"] == sha256_file(layout.model_weights("BRCA", 1))
    assert meta["architecture"] == {"dim_in": 16, "dim_emb": 32, "dim_attn": 16, "time_bins": 32}
    assert meta["encoder"] == config.encoder and meta["seed"] == 42
    assert set(meta["versions"]) == {"stephctl", "torch", "python"}
    assert meta["n_train"] + meta["n_test"] == 24 and meta["config"]["train"]["epochs"] == 2
    metrics = read_json(layout.model_metrics("BRCA", 1))
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics == {
        **read_json(layout.result_metrics("BRCA", CANCER_SPECIFIC, 1)),
        "history": metrics["history"],
    }
    log_text = layout.model_log("BRCA", 1).read_text()
    assert "epoch 1/2 train_loss" in log_text and "test_c_index" in log_text
    rows = read_csv(layout.predictions("BRCA", CANCER_SPECIFIC, 1))
    assert len(rows) == metrics["n"] and list(rows[0])[:4] == ["patient_id", "t", "e", "risk"]
    assert list(rows[0])[-1] == "hazard_32"
    risk = torch.tensor([float(r["risk"]) for r in rows], dtype=torch.float64)
    hazards = torch.tensor(
        [[float(r[f"hazard_{j}"]) for j in range(1, 33)] for r in rows], dtype=torch.float64
    )
    assert torch.allclose(risk, -torch.cumprod(1 - hazards, dim=1).sum(dim=1))
    assert "epochs: 2" in layout.model_config("BRCA", 1).read_text()


def test_every_model_starts_from_theta0(cli, tmp_path: Path) -> None:
    root = make_feature_project(tmp_path / "p")
    result = cli("-p", root, "train-source", "--epochs", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    layout, _ = load_project(root)
    theta0 = load_state_dict(layout.theta0)
    for cancer in ("BRCA", "BLCA"):
        for fold in (0, 1):
            state = load_state_dict(layout.model_weights(cancer, fold))
            assert state.keys() == theta0.keys()
            assert all(torch.equal(state[k], theta0[k]) for k in theta0)


def test_trained_models_moved_away_from_theta0(trained: Path) -> None:
    layout, _ = load_project(trained)
    theta0 = load_state_dict(layout.theta0)
    state = load_state_dict(layout.model_weights("BLCA", 0))
    assert any(not torch.equal(state[k], theta0[k]) for k in theta0)


def test_same_command_twice_is_bit_identical(cli, trained: Path, tmp_path: Path) -> None:
    root = make_feature_project(tmp_path / "again")
    result = cli("-p", root, "train-source", "--cancer", "BLCA", "--fold", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for name in ("models/null.safetensors", "models/BLCA/fold_1/model.safetensors"):
        assert sha256_file(root / name) == sha256_file(trained / name), name
    first = sha256_file(root / "models/BLCA/fold_1/model.safetensors")
    result = cli(
        "-p", root, "train-source", "--cancer", "BLCA", "--fold", "1", "--overwrite", "--device", "cpu"
    )
    assert result.exit_code == 0 and "1 done" in result.output
    assert sha256_file(root / "models/BLCA/fold_1/model.safetensors") == first


def test_done_units_are_skipped_and_incomplete_ones_redone(cli, trained: Path, tmp_path: Path) -> None:
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",))
    assert cli("-p", root, "train-source", "--fold", "0", "--device", "cpu").exit_code == 0
    layout, config = load_project(root)
    units = plan_train_source(layout, config)
    assert [(u.key, u.done) for u in units] == [("BRCA/fold_0", True), ("BRCA/fold_1", False)]
    layout.model_meta("BRCA", 0).unlink()  # a crash before meta.json: not done
    result = cli("-p", root, "train-source", "--json", "--device", "cpu")
    report = json.loads(result.stdout)
    assert report["counts"] == {"done": 2, "skipped": 0, "failed": 0, "locked": 0}
    result = cli("-p", root, "train-source", "--json", "--device", "cpu")
    assert json.loads(result.stdout)["counts"]["skipped"] == 2


def test_locked_unit_is_reported_not_failed(cli, tmp_path: Path) -> None:
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",))
    layout, _ = load_project(root)
    lock = lock_path_for(layout.model_weights("BRCA", 0))
    assert try_acquire(lock)
    try:
        result = cli("-p", root, "train-source", "--json", "--device", "cpu")
    finally:
        release(lock)
    # issue 16: a unit a live process keeps locked is not done, so the run is not ok (exit 2)
    assert result.exit_code == 2, result.output
    status = {item["key"]: item["status"] for item in json.loads(result.stdout)["items"]}
    assert status == {"BRCA/fold_0": "locked", "BRCA/fold_1": "done"}
    assert not layout.model_weights("BRCA", 0).exists()
