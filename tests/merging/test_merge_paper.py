"""`stephctl merge --paper` end to end, `--gamma auto`, and the target head of fixed merges on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _merge_project import project_copy, trained_project

from steph.checkpoints import load_state_dict
from steph.config import load_project
from steph.data import load_cohort, load_split
from steph.errors import ConfigError
from steph.fileio import read_csv, read_json
from steph.merging import load_merged_model
from steph.merging.autotune import inner_folds
from steph.merging.paper import PAPER_VARIANTS
from steph.pipeline.merge import merge_models, plan_merge
from steph.report import Status
from steph.survival import SurvivalTargets

PAPER_RUNS = [
    "model-avg",
    "adamerging",
    "adamerging-hypernet",
    "ties-adamerging",
    "ties-adamerging-hypernet",
    "surgery-adamerging",
    "surgery-adamerging-hypernet",
    "iso-c-adamerging",
    "iso-c-adamerging-hypernet",
    "roupkt-top3",
    "steph-top3",
    "steph-fixed-lambda0-top3",
    "steph-fixed-lambda1-top3",
    "steph-global-lambda-top3",
    "steph-dense",
    "steph-global-w-top3",
]


def test_paper_plans_the_comparison_set(tmp_path_factory: pytest.TempPathFactory) -> None:
    layout, config = load_project(trained_project(tmp_path_factory), {"merge.top_k": 3})
    units = plan_merge(layout, config, target="BRCA", paper=True, folds=[0])
    assert [u.params["run"] for u in units] == PAPER_RUNS
    assert [u.params["label"] for u in units] == [v.label for v in PAPER_VARIANTS]
    with pytest.raises(ConfigError, match="--paper"):
        plan_merge(layout, config, target="BRCA", paper=True, methods=["steph"])


def test_paper_runs_end_to_end(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    root = project_copy(tmp_path_factory, tmp_path / "p")
    layout, config = load_project(root, {"merge.top_k": 3})
    report = merge_models(layout, config, target="BRCA", paper=True, folds=[0])
    assert [i.status for i in report.items] == [Status.DONE] * len(PAPER_RUNS), report.items
    for run in PAPER_RUNS:
        meta = read_json(layout.merged_file("BRCA", run, 0, "meta.json"))
        assert meta["c_index"] is not None and meta["label"], run
    # every saved model rebuilds and predicts its test patients again
    cohort = load_cohort(layout, config, "BRCA")
    test = load_split(layout, cohort, 0).test
    from steph.data import open_bags

    store = open_bags(layout, config, cohort, test)
    for run in ("surgery-adamerging-hypernet", "iso-c-adamerging", "model-avg"):
        model = load_merged_model(layout, config, "BRCA", run, 0)
        row = read_csv(layout.predictions("BRCA", run, 0))[0]
        with torch.no_grad():
            hazards = torch.sigmoid(model(store.get(row["patient_id"]).unsqueeze(0)))[0]
        expected = torch.tensor([float(row[f"hazard_{j}"]) for j in range(1, 33)])
        assert torch.allclose(hazards, expected, atol=1e-5), run
    weights = read_csv(layout.merged_file("BRCA", "adamerging-hypernet", 0, "task_weights.csv"))
    assert {r["patient_id"] for r in weights} == set(test)
    # the fixed merge keeps the target model's head of the same fold, untrained
    head = load_state_dict(layout.merged_file("BRCA", "model-avg", 0, "head.safetensors"))
    target = load_state_dict(layout.model_weights("BRCA", 0))
    for key in ("pred_head.weight", "pred_head.bias"):
        assert torch.allclose(head[key], target[key], atol=1e-6)
    assert read_json(layout.merged_file("BRCA", "model-avg", 0, "meta.json"))["train_losses"] == []


def test_gamma_auto_chooses_on_the_training_split_and_records_it(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    root = project_copy(tmp_path_factory, tmp_path / "p")
    layout, config = load_project(root, {"merge.gamma": "auto", "merge.inner_folds": 2})
    report = merge_models(layout, config, target="BRCA", methods=["adamerging"], folds=[0])
    assert report.ok, report.items
    meta = read_json(layout.merged_file("BRCA", "adamerging-gamma-auto", 0, "meta.json"))
    choice = meta["gamma_selection"]
    assert choice["grid"] == [0.005, 0.05] and choice["chosen"] in choice["grid"]
    assert all(len(v) == 2 for v in choice["inner_c_index"].values())
    best = max(choice["grid"], key=lambda g: (choice["mean"][str(g)], -choice["grid"].index(g)))
    assert choice["chosen"] == best
    assert meta["merge_config"]["options"]["gamma"] == choice["chosen"] and meta["options"]["gamma"] == "auto"
    with pytest.raises(ConfigError, match="gamma: auto"):
        _, other = load_project(root, {"merge.gamma_grid": [0.1]})
        plan_merge(layout, other, target="BRCA", methods=["adamerging"])


def test_inner_folds_partition_the_training_patients_by_event() -> None:
    events = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1, 1])
    train = SurvivalTargets(
        ids=[f"P{i}" for i in range(10)], times=torch.arange(10.0), events=events, bins=torch.zeros(10)
    )
    folds = inner_folds(train, 3, seed=1)
    assert sorted(i for f in folds for i in f) == list(range(10))
    counts = [int(events[f].sum()) for f in folds]
    assert max(counts) - min(counts) <= 1


def test_cli_paper_lists_one_task_per_row_and_fold(tmp_path_factory: pytest.TempPathFactory, cli) -> None:
    root = trained_project(tmp_path_factory)
    out = cli("-p", root, "merge", "--target", "BRCA", "--paper", "--top-k", "3", "--list-tasks", "--json")
    assert out.exit_code == 0, out.output
    keys = [t["key"] for t in json.loads(out.stdout)]
    assert keys == [f"BRCA/{run}/fold_{k}" for k in (0, 1) for run in PAPER_RUNS]
    bad = cli("-p", root, "merge", "--target", "BRCA", "--gamma", "big")
    assert bad.exit_code == 1 and "neither a number nor auto" in bad.output
    listed = json.loads(cli("merge", "--list-methods", "--json").stdout)
    surgery = next(r for r in listed if r["name"] == "surgery-adamerging")
    fields = {f["name"]: f for f in surgery["fields"]}
    assert fields["rank"]["default"] == 16 and fields["rank"]["where"] == "merge.options.rank"
    assert fields["gamma"]["where"] == "merge.options.gamma" and fields["gamma"]["flag"] == "--gamma"
    assert fields["hypernet"]["help"]


def test_the_other_new_methods_and_variants_run_end_to_end(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    root = project_copy(tmp_path_factory, tmp_path / "p")
    layout, config = load_project(root)
    report = merge_models(
        layout, config, target="BRCA", methods=["iso-c", "iso-cts", "iso-cts-adamerging"], folds=[0]
    )
    assert [i.status for i in report.items] == [Status.DONE] * 3, report.items
    variants = {
        "steph-fnn-lambda-top3": {"merge.mix": "fnn"},
        "steph-top3-output-sigmoid-base-target": {"merge.options": {"output": "sigmoid", "base": "target"}},
        "ties-adamerging-hypernet-output-softplus-base-target": {
            "merge.options": {"base": "target", "hypernet": True, "output": "softplus"}
        },
    }
    for run, overrides in variants.items():
        method = "ties-adamerging" if run.startswith("ties") else "steph"
        top_k = {} if method == "ties-adamerging" else {"merge.top_k": 3}
        layout, config = load_project(root, {**top_k, **overrides})
        report = merge_models(layout, config, target="BRCA", methods=[method], folds=[0])
        assert [(i.key, i.status) for i in report.items] == [(f"BRCA/{run}/fold_0", Status.DONE)]
        assert read_json(layout.result_metrics("BRCA", run, 0))["n"] > 0
