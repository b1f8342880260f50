"""The authors' released checkpoints, imported with `import-reference --checkpoint`, export and predict like ours.

A feature-level project (D = 16) imports a reference null model and a cancer checkpoint (torch
``.pth`` files in the reference format); the exported bundle predicts the fold's test patients
from their features exactly as the imported model did, and the cancer's task vector exports
as a source.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _cohorts import make_feature_project

from steph.bundles.container import read_bundle
from steph.config import load_project
from steph.data import load_cohort, load_split
from steph.fileio import read_csv, write_csv
from steph.models.abmil import ABMIL


def _reference(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    torch.save({"model": ABMIL(16, dim_emb=32, dim_attn=16).state_dict(), "epoch": 20}, path)


def test_released_models_export_and_predict_from_features(cli, tmp_path: Path) -> None:
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",))
    _reference(tmp_path / "null.pth", 1)
    _reference(tmp_path / "brca.pth", 2)
    steps = [
        ("import-reference", "--theta0", tmp_path / "null.pth"),
        ("import-reference", "--checkpoint", tmp_path / "brca.pth", "--cancer", "BRCA", "--fold", 0),
        ("task-vector", "--cancer", "BRCA", "--fold", 0),
        ("export", "-t", "BRCA", "-m", "cancer-specific", "-k", 0, "--out", tmp_path / "model.safetensors"),
        ("export-sources", "--cancer", "BRCA", "--fold", 0, "--out", tmp_path / "sources.safetensors"),
    ]
    for step in steps:
        result = cli("-p", root, *step)
        assert result.exit_code == 0, (step, result.output)
    card = read_bundle(tmp_path / "model.safetensors").card
    assert card["method"]["name"] == "cancer-specific" and card["architecture"]["dim_in"] == 16
    assert card["cohorts"]["target"]["patients"] == 24
    assert read_bundle(tmp_path / "sources.safetensors").card["sources"]["BRCA"]["folds"] == [0]

    layout, config = load_project(root)
    cohort = load_cohort(layout, config, "BRCA")
    test = list(load_split(layout, cohort, 0).test)
    manifest = tmp_path / "new.csv"
    write_csv(
        manifest, ["patient_id", "slide_id"], [[p, s] for p in test for s in cohort.patients[p].slide_ids]
    )
    out = tmp_path / "run"
    result = cli(
        "-p", root, "predict", "--manifest", manifest, "--model", tmp_path / "model.safetensors", "--out", out
    )
    assert result.exit_code == 0, result.output
    reference = {r["patient_id"]: r for r in read_csv(layout.predictions("BRCA", "cancer-specific", 0))}
    bins = config.model.time_bins
    for row in read_csv(out / "predictions.csv"):
        mine = np.array([float(row[f"hazard_{j}"]) for j in range(1, bins + 1)])
        theirs = np.array([float(reference[row["patient_id"]][f"hazard_{j}"]) for j in range(1, bins + 1)])
        np.testing.assert_allclose(mine, theirs, atol=1e-6)
    assert json.loads((out / "meta.json").read_text())["patients"] == len(test)


def test_cli_refuses_ambiguous_model_or_inputs(cli, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    write_csv(manifest, ["patient_id", "slide_id"], [["P", "S"]])
    for args, message in [
        (("--manifest", manifest), "either --model BUNDLE or --target"),
        (("--manifest", manifest, "--model", "b", "-t", "BRCA"), "either --model BUNDLE or --target"),
        (("--manifest", manifest, "-t", "BRCA", "-m", "steph"), "needs --target, --method and --fold"),
        (("--model", "b"), "either slide files or --manifest"),
        ((tmp_path / "a.svs", "--manifest", manifest, "--model", "b"), "either slide files or --manifest"),
    ]:
        result = cli("-p", tmp_path, "predict", *args)
        assert result.exit_code == 1 and message in result.stderr, (args, result.output)


@pytest.mark.parametrize("args", [("-k", 0, "--all-folds"), ()])
def test_export_needs_exactly_one_of_fold_and_all_folds(cli, tmp_path: Path, args: tuple) -> None:
    result = cli("-p", tmp_path, "export", "-t", "BRCA", *args)
    assert result.exit_code == 1 and "exactly one of --fold K and --all-folds" in result.stderr
