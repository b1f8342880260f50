"""`stephctl transfer`: the zero-shot matrix, gains, factors, rare tumours and the study files."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from _cohorts import make_feature_project, write_cohort

from steph.config import load_project
from steph.errors import ConfigError, MissingArtifactError
from steph.fileio import read_json
from steph.layout import CANCER_SPECIFIC
from steph.metrics import harrell_c
from steph.pipeline.task_vector import compute_task_vectors
from steph.pipeline.train_source import train_source_models
from steph.records import TransferRecord
from steph.stages import TransferSelection, open_project, plan, run
from steph.transfer.factors import mmd2, permutation_spearman, ranks, spearman
from steph.transfer.zero_shot import MEAN_OF_SOURCES

CANCERS = ("BRCA", "BLCA", "LUAD")
RARE = "UVM"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three trained cancers and one evaluation-only cancer (labels and features, no model)."""
    root = make_feature_project(tmp_path_factory.mktemp("transfer"), cancers=CANCERS, n_patients=16, folds=2)
    layout, _ = load_project(root)
    write_cohort(
        layout, RARE, encoder="tiny-cnn", n_patients=12, dim=16, folds=2, rng=np.random.default_rng(9)
    )
    path = layout.config_file
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["evaluation_only"] = [RARE]
    data["transfer"] = {"bootstrap": 50, "permutations": 200}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    layout, config = load_project(root)
    assert train_source_models(layout, config).ok
    assert compute_task_vectors(layout, config).ok
    report = run(open_project(root), TransferSelection())
    assert report.ok, [i.message for i in report.items]
    return root


def test_plan_is_one_unit_per_target_rare_included(study: Path) -> None:
    units = plan(open_project(study), TransferSelection())
    assert [u.key for u in units] == [*CANCERS, RARE]
    assert all(u.done for u in units)


def test_diagonal_is_the_cancer_specific_test_c_index(study: Path) -> None:
    """The diagonal reuses the trained model and the one C-index: per fold it equals what
    train-source measured on the same test split."""
    layout, _ = load_project(study)
    for cancer in CANCERS:
        record = TransferRecord.read(layout.transfer_target(cancer))
        for pair in (p for p in record.pairs if p["source"] == cancer):
            metrics = read_json(layout.result_metrics(cancer, CANCER_SPECIFIC, pair["fold"]))
            assert pair["c"] == pytest.approx(metrics["c_index"], abs=1e-9)
            assert pair["gain"] is None


def test_off_diagonal_matches_an_independent_prediction(study: Path) -> None:
    """C(source -> target) recomputed here from the source model's own predict route."""
    import torch

    from steph.data import load_cohort, load_split, open_bags
    from steph.evaluation.predictors import project_model

    layout, config = load_project(study)
    cohort = load_cohort(layout, config, "BLCA")
    split = load_split(layout, cohort, 1)
    bags = open_bags(layout, config, cohort, list(split.test))
    model = project_model(layout, config, "BRCA", CANCER_SPECIFIC, 1, device=torch.device("cpu"))
    _, surv = model.predict(list(split.test), bags, device=torch.device("cpu"))
    risk = (-surv.sum(dim=1)).numpy()
    expected = harrell_c(
        [cohort.patients[p].t for p in split.test], [cohort.patients[p].e for p in split.test], risk
    ).value
    record = TransferRecord.read(layout.transfer_target("BLCA"))
    pair = next(p for p in record.pairs if p["source"] == "BRCA" and p["fold"] == 1)
    assert pair["c"] == pytest.approx(expected, abs=1e-9)
    own = next(p for p in record.pairs if p["source"] == "BLCA" and p["fold"] == 1)
    assert pair["gain"] == pytest.approx(pair["c"] - own["c"], abs=1e-12)
    assert pair["gain_low"] <= pair["gain"] + 1e-9 and pair["gain"] - 1e-9 <= pair["gain_high"]


def test_study_files_and_matrix(study: Path) -> None:
    layout, _ = load_project(study)
    for name in ("pairs.csv", "matrix.csv", "matrix.json", "factors.csv", "factors.json", "table.md"):
        assert layout.transfer_file(name).is_file(), name
    assert layout.transfer_file("heatmap.png").stat().st_size > 0
    for factor in ("cosine", "mmd", "n_train", "event_rate", "own_c"):
        assert layout.transfer_factor_plot(factor).is_file()
    matrix = read_json(layout.transfer_file("matrix.json"))
    assert matrix["targets"] == [*CANCERS, RARE]
    assert matrix["sources"] == [*CANCERS, MEAN_OF_SOURCES]
    assert matrix["evaluation_only"] == [RARE]
    for i, source in enumerate(CANCERS):
        for j, target in enumerate(CANCERS):
            record = TransferRecord.read(layout.transfer_target(target))
            values = [p["c"] for p in record.pairs if p["source"] == source]
            assert matrix["c_mean"][i][j] == pytest.approx(np.mean(values))
            assert matrix["c_sd"][i][j] == pytest.approx(np.std(values, ddof=1))
            assert (matrix["gain_mean"][i][j] is None) == (source == target)
            assert matrix["transfer"][i][j] in (
                {"own"} if source == target else {"positive", "negative", "neutral"}
            )
    with layout.transfer_file("matrix.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["source", *CANCERS, RARE]
    html = layout.transfer_file("report.html").read_text()
    assert "heatmap.png" in html and "factor_cosine.png" in html


def test_factors_per_pair(study: Path) -> None:
    layout, _ = load_project(study)
    factors = read_json(layout.transfer_file("factors.json"))
    assert set(factors["factors"]) == {"cosine", "mmd", "n_train", "event_rate", "own_c"}
    assert factors["pairs"] == 6  # 3 x 2 ordered pairs of trained cancers
    with layout.transfer_file("factors.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["source"], r["target"]) for r in rows} == set(itertools.permutations(CANCERS, 2))
    from steph.task_vectors import flatten, load_task_vector

    row = next(r for r in rows if r["source"] == "BRCA" and r["target"] == "LUAD")
    cos = []
    for k in (0, 1):
        a, _ = load_task_vector(layout, "BRCA", k)
        b, _ = load_task_vector(layout, "LUAD", k)
        va, vb = flatten(a, sorted(a)).double(), flatten(b, sorted(b)).double()
        cos.append(float(va @ vb / (va.norm() * vb.norm())))
    assert float(row["cosine"]) == pytest.approx(np.mean(cos), abs=1e-6)
    assert float(row["n_train"]) == pytest.approx(8.0)  # 16 patients, 2 folds
    assert 0.0 <= float(row["event_rate"]) <= 1.0


def test_rare_tumour_gets_zero_shot_and_ensemble_rows(study: Path) -> None:
    layout, _ = load_project(study)
    record = TransferRecord.read(layout.transfer_target(RARE))
    assert record.evaluation_only
    assert record.sources == list(CANCERS)
    assert {p["n"] for p in record.pairs} == {12}  # every labelled patient is a test patient
    assert {p["source"] for p in record.pairs} == {*CANCERS, MEAN_OF_SOURCES}
    assert all(p["gain"] is None for p in record.pairs)
    table = layout.transfer_file("table.md").read_text()
    assert (
        "Rare tumours" in table and "| STEPH | cannot run |" in table and "| ROUPKT | cannot run |" in table
    )
    with layout.transfer_file("rare.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["source"] for r in rows} == {*CANCERS, MEAN_OF_SOURCES}


def test_mean_of_sources_is_the_mean_risk_ensemble(study: Path) -> None:
    """Recompute the ensemble's C on the rare cancer from the sources' own predictions."""
    import torch

    from steph.data import load_cohort, open_bags
    from steph.evaluation.predictors import project_model

    layout, config = load_project(study)
    cohort = load_cohort(layout, config, RARE)
    ids = sorted(cohort.patients)
    bags = open_bags(layout, config, cohort, ids)
    risks = []
    for source in CANCERS:
        model = project_model(layout, config, source, CANCER_SPECIFIC, 0, device=torch.device("cpu"))
        _, surv = model.predict(ids, bags, device=torch.device("cpu"))
        risks.append((-surv.sum(dim=1)).numpy())
    expected = harrell_c(
        [cohort.patients[p].t for p in ids], [cohort.patients[p].e for p in ids], np.mean(risks, axis=0)
    ).value
    record = TransferRecord.read(layout.transfer_target(RARE))
    pair = next(p for p in record.pairs if p["source"] == MEAN_OF_SOURCES and p["fold"] == 0)
    assert pair["c"] == pytest.approx(expected, abs=1e-9)


def test_rerun_skips_done_targets(study: Path) -> None:
    report = run(open_project(study), TransferSelection(targets=["BRCA"]))
    assert [(i.key, i.status.value) for i in report.items] == [("BRCA", "skipped")]


def test_missing_source_model_fails_with_the_command(tmp_path: Path) -> None:
    root = make_feature_project(tmp_path / "p", cancers=("BRCA", "BLCA"), n_patients=12, folds=2)
    layout, config = load_project(root)
    assert train_source_models(layout, config, cancers=["BRCA"]).ok
    report = run(open_project(root), TransferSelection(targets=["BRCA"]))
    assert not report.ok
    assert (
        "BLCA fold 0" in report.items[0].message and "train-source -c BLCA" in report.items[0].details["hint"]
    )
    with pytest.raises(MissingArtifactError):
        from steph.transfer.zero_shot import required_models

        required_models(layout, config, ["BLCA"], [0])


def test_evaluation_only_cannot_also_be_trained(tmp_path: Path) -> None:
    root = make_feature_project(tmp_path / "p", cancers=("BRCA", "BLCA"), n_patients=12, folds=2)
    with pytest.raises(ConfigError, match="also listed in cancers"):
        load_project(root, {"evaluation_only": ["BRCA"]})


def test_cli_lists_one_task_per_target(study: Path, cli) -> None:
    result = cli("-p", study, "transfer", "--list-tasks")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split("\t")[1] for line in lines] == [*CANCERS, RARE]
    assert all(line.endswith("done") for line in lines)


# -- the factor statistics, against independent computations ------------------------------------
def test_spearman_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=30).astype(float)  # ties
    y = x + rng.normal(size=30)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert ranks(x).tolist() == pytest.approx(stats.rankdata(x).tolist())


def test_permutation_p_value() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=40)
    strong = permutation_spearman("f", x, x + 0.1 * rng.normal(size=40), permutations=500, seed=0)
    assert strong.rho > 0.9 and strong.p == pytest.approx(1 / 501)
    null = permutation_spearman("f", x, rng.normal(size=40), permutations=500, seed=0)
    assert null.p > 0.05
    few = permutation_spearman("f", [1.0, 2.0], [1.0, 2.0], permutations=10, seed=0)
    assert math.isnan(few.rho)


def test_mmd_matches_a_direct_double_sum() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(7, 3)), rng.normal(loc=0.5, size=(5, 3))
    sigma = 1.3

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * sigma**2))

    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(a, b) for a in x for b in y) / 35
    assert mmd2(x, y, bandwidth=sigma) == pytest.approx(xx + yy - 2 * xy, abs=1e-12)
    same = rng.normal(size=(200, 3))
    assert abs(mmd2(same[:100], same[100:])) < 0.05 < mmd2(same[:100], same[100:] + 2.0)


def test_cli_json_report_of_a_finished_study(study: Path, cli) -> None:
    result = cli("-p", study, "transfer", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {i["status"] for i in data["items"]} == {"skipped"}
    assert data["outputs"]["report"].endswith("report.html")


def test_check_and_status_have_a_row_for_the_rare_tumour(study: Path, cli) -> None:
    from steph.check import check_project
    from steph.hpc.status import project_status

    layout, config = load_project(study)
    checked = check_project(layout, config)
    assert checked.counts[RARE].evaluation_only and checked.counts[RARE].labelled == 12
    assert checked.counts[RARE].with_features == 12
    assert not [f for f in checked.findings if f.cancer == RARE and f.level.value == "error"]
    assert [f.check for f in checked.findings if f.cancer == RARE and f.check == "evaluation-only"]
    status = project_status(layout, config)
    assert status.stage("transfer").groups == {c: [1, 1] for c in (*CANCERS, RARE)}
    assert RARE in status.stage("features").groups
    assert RARE not in status.stage("train-source").groups
    result = cli("-p", study, "check")
    assert "evaluation-only (transfer)" in result.output


def test_doctests() -> None:
    import doctest

    import steph.transfer.factors
    import steph.transfer.zero_shot

    for module in (steph.transfer.factors, steph.transfer.zero_shot):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_source_only_cancers_transfer_with_their_one_model(tmp_path: Path, cli) -> None:
    """With `targets:`, a source-only cancer trains merge.source_fold only; its one model is
    applied to every fold of the targets. The command's --bootstrap overrides the config."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA", "BLCA"), n_patients=12, folds=2)
    path = root / "stephctl.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["targets"] = ["BRCA"]
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    layout, config = load_project(root)
    assert train_source_models(layout, config).ok
    assert not layout.model_meta("BLCA", 1).is_file()
    result = cli("-p", root, "transfer", "--target", "BRCA", "--bootstrap", "0", "--permutations", "0")
    assert result.exit_code == 0, result.output
    record = TransferRecord.read(layout.transfer_target("BRCA"))
    assert [(p["fold"], p["model_fold"]) for p in record.pairs if p["source"] == "BLCA"] == [(0, 0), (1, 0)]
    assert record.bootstrap == 0 and all(p["c_low"] is None for p in record.pairs)  # no intervals
    assert {p["transfer"] for p in record.pooled if p["source"] == "BLCA"} == {"n/a"}
    assert read_json(layout.transfer_file("factors.json"))["permutations"] == 0


# -- merge --sources auto:K -------------------------------------------------------------------------
def test_parse_auto() -> None:
    from steph.transfer.choose import parse_auto

    assert parse_auto(["auto:2"]) == 2 and parse_auto(["AUTO:1"]) == 1
    assert parse_auto(["BRCA"]) is None and parse_auto(None) is None
    for bad in (["auto:0"], ["auto"], ["auto:x"], ["auto:2", "BRCA"]):
        with pytest.raises(ConfigError, match="auto:K"):
            parse_auto(bad)


def test_merge_auto_k_picks_the_best_sources_on_the_training_split(study: Path, cli) -> None:
    from steph.records import MergeRecord

    layout, _ = load_project(study)
    result = cli(
        "-p", study, "merge", "--target", "BRCA", "--method", "task-arithmetic", "--sources", "auto:1"
    )
    assert result.exit_code == 0, result.output
    record = TransferRecord.read(layout.transfer_target("BRCA"))
    for fold in (0, 1):
        meta = MergeRecord.read(layout.merged_meta("BRCA", "task-arithmetic-auto1", fold))
        scores = {
            p["source"]: p["c_train"]
            for p in record.pairs
            if p["fold"] == fold and p["source"] in ("BLCA", "LUAD") and p["c_train"] is not None
        }
        best = max(scores, key=lambda s: scores[s])
        assert meta.sources == [best]
        choice = meta.source_choice
        assert choice is not None and choice["rule"] == "auto:1" and choice["chosen"] == [best]
        assert {r["source"]: r["c_train"] for r in choice["ranking"]} == scores


def test_merge_auto_k_needs_the_transfer_results(tmp_path: Path, cli) -> None:
    root = make_feature_project(tmp_path / "p", cancers=("BRCA", "BLCA"), n_patients=12, folds=2)
    assert cli("-p", root, "train-source").exit_code == 0
    assert cli("-p", root, "task-vector").exit_code == 0
    result = cli(
        "-p", root, "merge", "--target", "BRCA", "--method", "task-arithmetic", "--sources", "auto:1"
    )
    assert result.exit_code == 1
    assert (
        "no transfer results" in result.output
        and "stephctl -p" in result.output
        and "transfer --target BRCA" in result.output
    )
