"""Importing the authors' reference checkpoints: the null model as theta0, cancer models as units."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _cohorts import make_feature_project

from steph.checkpoints import load_state_dict
from steph.config import load_project
from steph.fileio import read_json, sha256_file
from steph.layout import CANCER_SPECIFIC
from steph.models.abmil import ABMIL


def save_reference(path: Path, *, seed: int, dim_in: int = 16, dim_attn: int = 16, prefix: str = "") -> dict:
    """A checkpoint in the reference format: ``{"model": state_dict, ...}`` saved with torch.save."""
    torch.manual_seed(seed)
    state = ABMIL(dim_in, dim_emb=32, dim_attn=dim_attn).state_dict()
    torch.save({"model": {prefix + k: v for k, v in state.items()}, "epoch": 20}, path)
    return state


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_feature_project(tmp_path / "p", cancers=("BRCA",))


def test_import_null_model_then_cancer_checkpoint(cli, project: Path, tmp_path: Path) -> None:
    null = save_reference(tmp_path / "null.pth", seed=1)
    trained = save_reference(tmp_path / "brca.pth", seed=2, prefix="module.")
    result = cli("-p", project, "import-reference", "--theta0", tmp_path / "null.pth", "--json")
    assert result.exit_code == 0, result.output
    layout, _ = load_project(project)
    record = read_json(layout.theta0_meta)
    assert json.loads(result.stdout)["sha256"] == record["sha256"] == sha256_file(layout.theta0)
    assert record["source_sha256"] == sha256_file(tmp_path / "null.pth")
    theta0 = load_state_dict(layout.theta0)
    assert all(torch.equal(theta0[k], null[k]) for k in null)

    result = cli(
        "-p",
        project,
        "import-reference",
        "--checkpoint",
        tmp_path / "brca.pth",
        "--cancer",
        "BRCA",
        "--fold",
        "0",
    )
    assert result.exit_code == 0, result.output
    assert "imported" in result.output
    weights = load_state_dict(layout.model_weights("BRCA", 0))
    assert all(torch.equal(weights[k], trained[k]) for k in trained)
    meta = read_json(layout.model_meta("BRCA", 0))
    assert meta["imported_from"] == str((tmp_path / "brca.pth").resolve())
    assert meta["theta0_sha256"] == record["sha256"] and meta["model_sha256"] == sha256_file(
        layout.model_weights("BRCA", 0)
    )
    metrics = read_json(layout.model_metrics("BRCA", 0))
    assert metrics["imported"] is True and metrics["n"] == meta["n_test"]
    assert layout.predictions("BRCA", CANCER_SPECIFIC, 0).is_file()
    # The imported unit counts as done: train-source skips it and trains the other fold from theta0.
    result = cli("-p", project, "train-source", "--json", "--device", "cpu")
    status = {i["key"]: i["status"] for i in json.loads(result.stdout)["items"]}
    assert status == {"BRCA/fold_0": "skipped", "BRCA/fold_1": "done"}


def test_import_refusals(cli, project: Path, tmp_path: Path) -> None:
    save_reference(tmp_path / "null.pth", seed=1)
    save_reference(tmp_path / "narrow.pth", seed=3, dim_attn=8)
    save_reference(tmp_path / "brca.pth", seed=2)
    result = cli(
        "-p",
        project,
        "import-reference",
        "--checkpoint",
        tmp_path / "brca.pth",
        "--cancer",
        "BRCA",
        "--fold",
        "0",
    )
    assert result.exit_code == 1 and "theta0 not found" in result.output and "--theta0" in result.output
    result = cli("-p", project, "import-reference", "--theta0", tmp_path / "narrow.pth")
    assert result.exit_code == 1 and "dim_attn 8 (expected 16)" in result.output
    assert cli("-p", project, "import-reference", "--theta0", tmp_path / "null.pth").exit_code == 0
    result = cli("-p", project, "import-reference", "--theta0", tmp_path / "null.pth")
    assert result.exit_code == 1 and "theta0 already exists" in result.output
    result = cli(
        "-p",
        project,
        "import-reference",
        "--checkpoint",
        tmp_path / "narrow.pth",
        "--cancer",
        "BRCA",
        "--fold",
        "0",
    )
    assert result.exit_code == 1 and "differs from theta0's" in result.output
    result = cli("-p", project, "import-reference", "--checkpoint", tmp_path / "brca.pth", "--cancer", "BRCA")
    assert result.exit_code == 1 and "exactly one --cancer and one --fold" in result.output
    torch.save({"model": {"encoder.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    result = cli(
        "-p", project, "import-reference", "--checkpoint", tmp_path / "other.pth", "-c", "BRCA", "-k", "0"
    )
    assert result.exit_code == 1 and "is not an ABMIL state dict" in result.output
    assert not load_project(project)[0].model_weights("BRCA", 0).exists()
