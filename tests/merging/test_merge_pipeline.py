"""`stephctl merge` end to end on a tiny trained project: files, the formula by hand, every method,
reproducibility, resuming and the loader."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _merge_project import CANCERS, files_under, project_copy, trained_project

from steph.checkpoints import load_state_dict
from steph.config import load_project
from steph.data import load_cohort, load_split
from steph.fileio import read_csv, read_json
from steph.merging import load_merged_model
from steph.pipeline.merge import merge_models, plan_merge
from steph.report import Status
from steph.training.loop import predict

MERGED_FILES = (
    "coefficients.csv",
    "config.yaml",
    "head.safetensors",
    "hypernet.safetensors",
    "merge.log",
    "meta.json",
)
SOURCES = [c for c in CANCERS if c != "BRCA"]


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained project after `stephctl merge --target BRCA` through the CLI."""
    from typer.testing import CliRunner

    from stephctl.main import app

    root = project_copy(tmp_path_factory, tmp_path_factory.mktemp("merged") / "p")
    result = CliRunner().invoke(app, ["-p", str(root), "merge", "--target", "BRCA", "--json"])
    assert result.exit_code == 0, result.output
    (root / "report.json").write_text(result.stdout)
    return root


def test_cli_merge_writes_exactly_the_layout_files(merged: Path) -> None:
    layout, _ = load_project(merged)
    expected = set()
    for fold in (0, 1):
        expected |= {
            str(layout.merged_file("BRCA", "steph", fold, f).relative_to(merged)) for f in MERGED_FILES
        }
        expected |= {
            str(layout.predictions("BRCA", "steph", fold).relative_to(merged)),
            str(layout.result_metrics("BRCA", "steph", fold).relative_to(merged)),
        }
    written = files_under(merged, "merged") | {f for f in files_under(merged, "results") if "/steph/" in f}
    assert written == expected
    report = json.loads((merged / "report.json").read_text())
    assert report["ok"] and report["counts"]["done"] == 2
    assert [item["key"] for item in report["items"]] == ["BRCA/steph/fold_0", "BRCA/steph/fold_1"]


def test_meta_and_tables(merged: Path) -> None:
    layout, _ = load_project(merged)
    meta = read_json(layout.merged_file("BRCA", "steph", 1, "meta.json"))
    assert meta["method"] == "steph" and meta["sources"] == SOURCES and meta["source_fold"] == 0
    assert meta["top_k"] == 5 and meta["options"]["gamma"] == 0.005 and meta["options"]["beta"] == 0.05
    assert meta["theta0_sha256"] == read_json(layout.theta0_meta)["sha256"]
    assert set(meta["vector_sha256"]) == {"BRCA/fold_1", *(f"{s}/fold_0" for s in SOURCES)}
    assert meta["seed"] == 42 and set(meta["versions"]) == {"stephctl", "torch", "python"}
    head = load_state_dict(layout.merged_file("BRCA", "steph", 1, "head.safetensors"))
    assert set(head) == {"pred_head.weight", "pred_head.bias"} and head["pred_head.weight"].shape == (32, 32)
    rows = read_csv(layout.merged_file("BRCA", "steph", 1, "coefficients.csv"))
    assert list(rows[0]) == ["patient_id", "source", "w", "lambda", "selected"]
    metrics = read_json(layout.result_metrics("BRCA", "steph", 1))
    assert len(rows) == metrics["n"] * len(SOURCES) and {"c_index", "n", "events"} <= set(metrics)
    for pid in {r["patient_id"] for r in rows}:
        mine = [r for r in rows if r["patient_id"] == pid]
        assert [r["source"] for r in mine] == SOURCES and sum(int(r["selected"]) for r in mine) == 5
        assert all(float(r["w"]) >= 0 and 0 < float(r["lambda"]) <= 1 for r in mine)


def _features(layout, config, cohort, pid: str) -> np.ndarray:
    parts = []
    for sid in cohort.patients[pid].slide_ids:
        with h5py.File(layout.features(config.encoder, sid), "r") as fh:
            parts.append(fh["features"][:].astype(np.float64))
    return np.concatenate(parts)


def test_prediction_equals_the_formula_by_hand_from_the_saved_tensors(merged: Path) -> None:
    layout, config = load_project(merged)
    cohort = load_cohort(layout, config, "BRCA")
    pid = load_split(layout, cohort, 0).test[2]
    x = _features(layout, config, cohort, pid)

    def npy(path: Path) -> dict[str, np.ndarray]:
        return {k: v.double().numpy() for k, v in load_state_dict(path).items()}

    hyper = npy(layout.merged_file("BRCA", "steph", 0, "hypernet.safetensors"))
    head = npy(layout.merged_file("BRCA", "steph", 0, "head.safetensors"))
    theta0 = npy(layout.theta0)
    tau_t = npy(layout.task_vector("BRCA", 0))
    tau_s = [npy(layout.task_vector(s, 0)) for s in SOURCES]
    relu = lambda a: np.maximum(a, 0.0)  # noqa: E731
    h = relu(x @ hyper["hypernet.embed.weight"].T + hyper["hypernet.embed.bias"]).mean(axis=0)

    def mlp(prefix: str) -> np.ndarray:
        hidden = relu(hyper[f"{prefix}.0.weight"] @ h + hyper[f"{prefix}.0.bias"])
        return relu(hyper[f"{prefix}.3.weight"] @ hidden + hyper[f"{prefix}.3.bias"])

    w, lam = mlp("hypernet.agg"), 1.0 / (1.0 + mlp("hypernet.mix"))
    chosen = np.argsort(-w, kind="stable")[:5]
    theta = {}
    for key in theta0:
        theta[key] = theta0[key] + sum(
            w[i] * (lam[i] * tau_t[key] + (1 - lam[i]) * tau_s[i][key]) for i in chosen
        )
    hid = relu(x @ theta["feat_proj.0.weight"].T + theta["feat_proj.0.bias"])
    a = np.tanh(
        hid @ theta["attention_net.attention_a.0.weight"].T + theta["attention_net.attention_a.0.bias"]
    )
    g = 1 / (
        1
        + np.exp(
            -(hid @ theta["attention_net.attention_b.0.weight"].T + theta["attention_net.attention_b.0.bias"])
        )
    )
    s = ((a * g) @ theta["attention_net.attention_c.weight"].T + theta["attention_net.attention_c.bias"])[
        :, 0
    ]
    alpha = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    logits = head["pred_head.weight"] @ (alpha @ hid) + head["pred_head.bias"]
    hazards = 1 / (1 + np.exp(-logits))

    row = next(r for r in read_csv(layout.predictions("BRCA", "steph", 0)) if r["patient_id"] == pid)
    np.testing.assert_allclose([float(row[f"hazard_{j}"]) for j in range(1, 33)], hazards, atol=1e-5)
    coef = [
        r
        for r in read_csv(layout.merged_file("BRCA", "steph", 0, "coefficients.csv"))
        if r["patient_id"] == pid
    ]
    np.testing.assert_allclose([float(r["w"]) for r in coef], w, atol=1e-5)
    np.testing.assert_allclose([float(r["lambda"]) for r in coef], lam, atol=1e-5)


def test_loaded_model_reproduces_the_test_predictions(merged: Path) -> None:
    layout, config = load_project(merged)
    model = load_merged_model(layout, config, "BRCA", "steph", 1)
    rows = read_csv(layout.predictions("BRCA", "steph", 1))
    cohort = load_cohort(layout, config, "BRCA")
    bag = torch.from_numpy(_features(layout, config, cohort, rows[0]["patient_id"])).float()
    with torch.no_grad():
        logits = model(bag.unsqueeze(0))
    assert logits.shape == (1, 32) and not model.training
    expected = torch.tensor([float(rows[0][f"hazard_{j}"]) for j in range(1, 33)])
    assert torch.allclose(torch.sigmoid(logits[0]), expected, atol=1e-6)


def test_rerun_skips_done_folds_and_refuses_changed_settings(merged: Path, cli) -> None:
    again = cli("-p", merged, "merge", "--target", "BRCA", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["counts"]["skipped"] == 2
    changed = cli("-p", merged, "merge", "--target", "brca", "--fold", "0", "--epochs", "2", "--json")
    assert changed.exit_code == 2
    item = json.loads(changed.stdout)["items"][0]
    assert item["status"] == "failed" and "epochs" in item["message"] and "--overwrite" in item["message"]


def test_every_baseline_and_ablation_runs(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    root = project_copy(tmp_path_factory, tmp_path / "p")
    layout, config = load_project(root, {"merge.top_k": 3})  # roupkt routes to the top 3 of its 6 experts
    baselines = ["model-avg", "task-arithmetic", "ties", "adamerging", "ties-adamerging", "roupkt"]
    report = merge_models(layout, config, target="BRCA", methods=baselines, folds=[0])
    assert [i.status for i in report.items] == [Status.DONE] * 6
    ablations = {
        "steph-fixed-lambda0-top3": {"merge.top_k": 3, "merge.mix": "fixed", "merge.fixed_lambda": 0.0},
        "steph-global-lambda-top3": {"merge.top_k": 3, "merge.mix": "global"},
        "steph-global-w-top3": {"merge.top_k": 3, "merge.weights": "global"},
        "steph-dense": {"merge.sparse": False},
    }
    for run, overrides in ablations.items():
        layout, config = load_project(root, overrides)
        report = merge_models(layout, config, target="BRCA", folds=[0])
        assert [(i.key, i.status) for i in report.items] == [(f"BRCA/{run}/fold_0", Status.DONE)]
    names = set(layout.result_methods("BRCA"))
    expected = {
        "cancer-specific",
        "model-avg",
        "task-arithmetic",
        "ties",
        "adamerging",
        "ties-adamerging",
        "roupkt-top3",
    }
    assert names == expected | set(ablations)
    for name in names - {"cancer-specific"}:
        metrics = read_json(layout.result_metrics("BRCA", name, 0))
        assert metrics["n"] > 0 and metrics["c_index"] is not None, name
    assert read_csv(layout.merged_file("BRCA", "roupkt-top3", 0, "routing.csv"))
    weights = read_csv(layout.merged_file("BRCA", "adamerging", 0, "task_weights.csv"))
    assert [r["task_vector"] for r in weights] == ["BRCA/fold_0", *(f"{s}/fold_0" for s in SOURCES)]


def test_same_seed_gives_the_same_bits(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    root = project_copy(tmp_path_factory, tmp_path / "p")
    layout, config = load_project(root, {"merge.top_k": 2, "merge.sources": ["BLCA", "LUNG", "KIPAN"]})
    outputs = [
        layout.merged_file("BRCA", "steph-top2", 0, "hypernet.safetensors"),
        layout.merged_file("BRCA", "steph-top2", 0, "head.safetensors"),
        layout.merged_file("BRCA", "steph-top2", 0, "coefficients.csv"),
        layout.predictions("BRCA", "steph-top2", 0),
    ]
    assert merge_models(layout, config, target="BRCA", folds=[0]).ok
    first = [p.read_bytes() for p in outputs]
    assert merge_models(layout, config, target="BRCA", folds=[0], overwrite=True).ok
    assert [p.read_bytes() for p in outputs] == first


def test_plan_lists_units_fold_major(tmp_path_factory: pytest.TempPathFactory) -> None:
    layout, config = load_project(trained_project(tmp_path_factory), {"merge.top_k": 3})
    units = plan_merge(layout, config, target="BRCA", methods=["steph", "ties"])
    assert [u.key for u in units] == [
        "BRCA/steph-top3/fold_0",
        "BRCA/ties/fold_0",
        "BRCA/steph-top3/fold_1",
        "BRCA/ties/fold_1",
    ]
    assert units[0].outputs == (layout.merged_file("BRCA", "steph-top3", 0, "meta.json"),)
    assert units[0].params["sources"] == SOURCES and not units[0].done


def test_batched_predict_matches_single_bags(merged: Path) -> None:
    layout, config = load_project(merged)
    model = load_merged_model(layout, config, "BRCA", "steph", 0)
    cohort = load_cohort(layout, config, "BRCA")
    ids = list(load_split(layout, cohort, 0).test)[:4]
    from steph.data import BagStore

    store = BagStore.in_memory(
        {pid: torch.from_numpy(_features(layout, config, cohort, pid)).float() for pid in ids}
    )
    batched, _ = predict(model, ids, store, device=torch.device("cpu"), batch_size=4)
    single, _ = predict(model, ids, store, device=torch.device("cpu"), batch_size=1)
    assert torch.allclose(batched, single, atol=1e-6)


def test_a_folds_task_vectors_are_read_once_for_its_methods(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan runs a fold's methods one after the other: their task vectors are read and
    hash-checked once per fold, and every method still gets the fold's own vectors."""
    import steph.pipeline.merge as pipeline

    root = project_copy(tmp_path_factory, tmp_path / "p")
    layout, config = load_project(root)
    loads: list[tuple[str, int]] = []
    real = pipeline.load_inputs

    def counting(layout_: object, target: str, fold: int, *args: object) -> object:
        loads.append((target, fold))
        return real(layout_, target, fold, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "load_inputs", counting)
    methods = ["task-arithmetic", "model-avg", "ties"]
    report = merge_models(layout, config, target="BRCA", methods=methods)
    assert report.ok
    assert loads == [("BRCA", 0), ("BRCA", 1)]
    for fold in (0, 1):  # the fold's vector, not the other fold's
        meta = read_json(layout.merged_meta("BRCA", "task-arithmetic", fold))
        assert (
            meta["vector_sha256"][f"BRCA/fold_{fold}"]
            == read_json(layout.task_vector_meta("BRCA", fold))["sha256"]
        )


def test_roupkt_predicts_its_training_patients_from_the_experts_of_training(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A merge unit trains and predicts inside one memo of its training patients: ROUPKT's frozen
    experts run once per training patient met in training, not again for the predictions of the
    training split, and the predictions are those of recomputing them."""
    import steph.pipeline.merge as pipeline
    from steph.merging.roupkt import RouPKTModel

    root = project_copy(tmp_path_factory, tmp_path / "p")
    layout, config = load_project(root, {"train.batch_size": 4})
    embedded: list[int] = []
    frozen = RouPKTModel.embeddings

    def counting(self: RouPKTModel, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        rows = frozen(self, x, mask)
        embedded.append(int(rows.shape[0]))
        return rows

    monkeypatch.setattr(RouPKTModel, "embeddings", counting)
    real = pipeline.bag_memo
    runs = {}
    for reuse in (True, False):
        if not reuse:  # the unit's memo without the patients' ids: fit opens its own, predict computes
            monkeypatch.setattr(pipeline, "bag_memo", lambda total, ids=None: real(total))
        embedded.clear()
        report = merge_models(layout, config, target="BRCA", methods=["roupkt"], folds=[0], overwrite=True)
        assert report.ok
        predictions = read_csv(layout.predictions("BRCA", "roupkt", 0))
        runs[reuse] = (sum(embedded), predictions)
    split = load_split(layout, load_cohort(layout, config, "BRCA"), 0)
    assert runs[False][0] - runs[True][0] == len(split.train)  # every training patient was met
    for new, old in zip(runs[True][1], runs[False][1], strict=True):
        assert new["patient_id"] == old["patient_id"]
        assert float(new["risk"]) == pytest.approx(float(old["risk"]), abs=1e-6)
