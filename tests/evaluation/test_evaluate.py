"""The evaluate stage: per-fold metrics, summary.csv rows, relative change, partial methods, bad input."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw
from sksurv.util import Surv

from steph.config import load_project
from steph.errors import DataError, UnknownNameError
from steph.evaluation import read_predictions, relative_change, survival_at
from steph.evaluation.summary import format_change
from steph.pipeline.evaluate import evaluate_models, evaluate_targets, plan_targets
from steph.report import Status
from steph.synthetic.results import write_results

NO_REPORT = {"evaluate.report": False}
METRICS = ["c_index", "c_index_uno", "auc_1y", "auc_3y", "auc_5y", "ibs"]


@pytest.fixture
def project(empty_project: Path) -> Path:
    write_results(empty_project, targets=("BRCA", "BLCA"), folds=3, patients=60)
    return empty_project


def _summary(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _value(rows: list[dict[str, str]], **where: str) -> float:
    hits = [r for r in rows if all(r[k] == v for k, v in where.items())]
    assert len(hits) == 1, where
    return float(hits[0]["value"])


def test_relative_change_is_the_papers_form() -> None:
    assert relative_change(0.6949, 0.6609) == pytest.approx(5.1445, abs=1e-4)
    assert format_change(relative_change(0.6949, 0.6609)) == "+5.14%"
    assert format_change(relative_change(0.65, 0.70)) == "-7.14%"
    assert math.isnan(relative_change(0.7, math.nan)) and format_change(math.nan) == "n/a"


def test_survival_at_is_the_step_function_of_the_bins() -> None:
    hazards = np.array([[0.1, 0.2, 0.5]])
    s = survival_at(hazards, np.array([0.0, 364.9, 365.0, 729.0, 730.0, 1095.0, 9999.0]), 365.0)
    np.testing.assert_allclose(s[0], [1.0, 1.0, 0.9, 0.9, 0.72, 0.36, 0.36])


def test_the_plan_is_one_unit_per_target_and_each_runs_its_folds(project: Path) -> None:
    layout, config = load_project(project, NO_REPORT)
    units = plan_targets(layout, ["BRCA", "BLCA"])
    assert [u.key for u in units] == ["BRCA", "BLCA"] and not units[0].done
    assert [u.key for u in plan_targets(layout, [], targets=["brca"], methods=["steph"])] == ["BRCA"]
    report = evaluate_targets(layout, config, units, bootstrap=0)
    assert len(report.items) == 2 * 3 * 3 and report.items[0].key == "BRCA/cancer-specific/fold_0"
    one = evaluate_targets(layout, config, plan_targets(layout, [], targets=["brca"], methods=["steph"]))
    assert [i.key for i in one.items] == [f"BRCA/steph/fold_{k}" for k in range(3)]
    with pytest.raises(UnknownNameError, match="BLCA, BRCA"):
        evaluate_models(layout, config, targets=["LUAD"])
    with pytest.raises(UnknownNameError, match="steph"):
        evaluate_models(layout, config, methods=["ties"])


def test_summary_rows_match_an_independent_recomputation(project: Path) -> None:
    layout, config = load_project(project, NO_REPORT)
    report = evaluate_models(layout, config, bootstrap=50)
    assert report.ok and report.count(Status.DONE) == 18
    rows = _summary(layout.summary)
    assert list(rows[0]) == ["target", "method", "fold", "metric", "value"]
    assert {r["metric"] for r in rows} >= {
        *METRICS,
        "c_index_ci_low",
        "c_index_ci_high",
        "c_index_rel_change_pct",
    }
    assert {r["fold"] for r in rows} == {"0", "1", "2", "mean", "std"}

    per_fold = {}
    for method in ("cancer-specific", "steph"):
        values, unos = [], []
        for k in range(3):
            preds = read_predictions(
                layout.predictions("BRCA", method, k), target="BRCA", method=method, fold=k, time_bins=32
            )
            c = concordance_index_censored(preds.event, preds.time, preds.risk)[0]
            split = list(csv.DictReader(layout.split("BRCA", k).open()))
            labels = {r["patient_id"]: r for r in csv.DictReader(layout.labels("BRCA").open())}
            train = [labels[r["train"]] for r in split if r["train"]]
            y_train = Surv.from_arrays([r["e"] == "1" for r in train], [float(r["t"]) for r in train])
            uno = concordance_index_ipcw(y_train, Surv.from_arrays(preds.event, preds.time), preds.risk)[0]
            assert _value(rows, target="BRCA", method=method, fold=str(k), metric="c_index") == pytest.approx(
                c, abs=1e-12
            )
            assert _value(
                rows, target="BRCA", method=method, fold=str(k), metric="c_index_uno"
            ) == pytest.approx(uno, abs=1e-12)
            low = _value(rows, target="BRCA", method=method, fold=str(k), metric="c_index_ci_low")
            high = _value(rows, target="BRCA", method=method, fold=str(k), metric="c_index_ci_high")
            assert low <= c <= high
            values.append(c)
            unos.append(uno)
        per_fold[method] = values
        assert _value(rows, target="BRCA", method=method, fold="mean", metric="c_index") == pytest.approx(
            np.mean(values)
        )
        assert _value(rows, target="BRCA", method=method, fold="std", metric="c_index") == pytest.approx(
            np.std(values, ddof=1)
        )
    change = 100 * (np.mean(per_fold["steph"]) / np.mean(per_fold["cancer-specific"]) - 1)
    assert _value(
        rows, target="BRCA", method="steph", fold="mean", metric="c_index_rel_change_pct"
    ) == pytest.approx(change)
    assert (
        _value(rows, target="BRCA", method="cancer-specific", fold="mean", metric="c_index_rel_change_pct")
        == 0.0
    )

    means = {
        m: [_value(rows, target=t, method=m, fold="mean", metric="c_index") for t in ("BLCA", "BRCA")]
        for m in ("cancer-specific", "steph")
    }
    assert _value(rows, target="mean", method="steph", fold="mean", metric="c_index") == pytest.approx(
        np.mean(means["steph"])
    )
    over = 100 * (np.mean(means["steph"]) / np.mean(means["cancer-specific"]) - 1)
    assert _value(
        rows, target="mean", method="steph", fold="mean", metric="c_index_rel_change_pct"
    ) == pytest.approx(over)


def test_bootstrap_is_seeded_and_paired(project: Path) -> None:
    layout, config = load_project(project, NO_REPORT)
    a = evaluate_models(layout, config, targets=["BRCA"], bootstrap=30)
    b = evaluate_models(layout, config, targets=["BRCA"], bootstrap=30)
    assert a.to_dict()["summary"] == b.to_dict()["summary"]
    assert a.summary is not None
    steph = next(r for r in a.summary.folds if r.predictions.method == "steph")
    assert steph.metrics["c_index"].replicates.shape == (30,)
    no_ci = evaluate_models(layout, config, targets=["BRCA"], bootstrap=0)
    assert no_ci.summary is not None
    assert all(math.isnan(m.ci_low) for r in no_ci.summary.folds for m in r.metrics.values())


def test_partial_methods_are_reported_and_still_summarised(project: Path) -> None:
    layout, config = load_project(project, NO_REPORT)
    shutil.rmtree(layout.results_dir("BRCA", "steph", 2))
    report = evaluate_models(layout, config, bootstrap=0, targets=["BRCA"])
    # the missing fold was asked for (its method has other folds): a failure, still summarised
    assert [i.key for i in report.failed] == ["BRCA/steph/fold_2"] and report.summary is not None
    assert "stephctl merge --target BRCA --method steph --fold 2" in report.failed[0].message
    steph = report.summary.per_target["BRCA"]["steph"]
    assert steph.partial and steph.folds == [0, 1] and steph.missing_folds == [2]
    assert any("BRCA/steph: partial, fold(s) 2 missing" in w for w in report.warnings)
    row = next(r for r in report.tables[0].rows if r[0] == "steph")
    assert row[1] == "2/3 partial"
    folds = {
        r.predictions.fold: r.metrics["c_index"].value
        for r in report.summary.folds
        if r.predictions.method != "task-arithmetic"
    }
    del folds  # paired: the relative change uses folds 0 and 1 of both methods
    ref = [
        r.metrics["c_index"].value
        for r in report.summary.folds
        if r.predictions.method == "cancer-specific" and r.predictions.fold < 2
    ]
    mine = [r.metrics["c_index"].value for r in report.summary.folds if r.predictions.method == "steph"]
    assert steph.rel_change["c_index"] == pytest.approx(relative_change(np.mean(mine), np.mean(ref)))


def test_missing_reference_method_gives_no_relative_change(project: Path) -> None:
    layout, config = load_project(project, NO_REPORT)
    report = evaluate_models(
        layout, config, bootstrap=0, methods=["steph", "task-arithmetic"], targets=["BRCA"]
    )
    assert any("no results for the reference method 'cancer-specific'" in w for w in report.warnings)
    assert report.tables[0].rows[0][4] == "n/a"


def test_all_censored_fold_is_undefined_not_a_crash(project: Path) -> None:
    layout, config = load_project(project, NO_REPORT)
    ids: set[str] = set()
    for method in layout.result_methods("BRCA"):  # censor every test patient of fold 1, in all files
        path = layout.predictions("BRCA", method, 1)
        text = path.read_text().splitlines()
        e = text[0].split(",").index("e")
        rows = [line.split(",") for line in text[1:]]
        for row in rows:
            row[e] = "0"
            ids.add(row[0])
        path.write_text("\n".join([text[0], *(",".join(r) for r in rows)]) + "\n")
    _rewrite(
        layout.labels("BRCA"),
        lambda ls: [
            ls[0],
            *(ln if ln.split(",")[0] not in ids else ",".join([*ln.split(",")[:3], "0"]) for ln in ls[1:]),
        ],
    )
    report = evaluate_models(layout, config, bootstrap=20, targets=["BRCA"])
    assert report.ok and report.summary is not None
    fold = next(
        r for r in report.summary.folds if r.predictions.method == "steph" and r.predictions.fold == 1
    )
    assert math.isnan(fold.metrics["c_index"].value)
    assert "censored" in fold.metrics["c_index"].reason
    assert not math.isnan(fold.metrics["ibs"].value)  # the Brier score is still defined
    assert report.summary.per_target["BRCA"]["steph"].defined_folds["c_index"] == 2
    assert any("c_index undefined on fold(s) 1" in w for w in report.warnings)
    row = next(
        r
        for r in _summary(layout.summary)
        if r["method"] == "steph" and r["fold"] == "1" and r["metric"] == "c_index"
    )
    assert row["value"] == "nan"


def _rewrite(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ls: [ls[0].replace("risk,", "score,"), *ls[1:]], r"missing column\(s\) risk"),
        (lambda ls: [ls[0], ls[1].replace(ls[1].split(",")[3], "nan", 1), *ls[2:]], "risk is NaN"),
        (
            lambda ls: [ls[0], "NOBODY-001" + ls[1][ls[1].index(",") :], *ls[2:]],
            "not in the labels: NOBODY-001",
        ),
        (lambda ls: [ls[0], ls[1], ls[1], *ls[2:]], "listed twice"),
    ],
)
def test_bad_predictions_fail_the_fold_with_the_file_named(project: Path, edit, message: str) -> None:
    layout, config = load_project(project, NO_REPORT)
    path = layout.predictions("BRCA", "steph", 0)
    _rewrite(path, edit)
    with pytest.raises(DataError, match=message) as info:
        labels = {
            r["patient_id"]: (float(r["t"]), int(r["e"]))
            for r in csv.DictReader(layout.labels("BRCA").open())
        }
        read_predictions(path, target="BRCA", method="steph", fold=0, time_bins=32, labels=labels)
    assert str(path) in info.value.message
    report = evaluate_models(layout, config, bootstrap=0, targets=["BRCA"])
    assert not report.ok
    assert [i.key for i in report.failed] == ["BRCA/steph/fold_0"] and str(path) in report.failed[0].message
    assert report.summary is not None  # the other folds are still summarised
    assert report.summary.per_target["BRCA"]["steph"].folds == [1, 2]


def test_without_labels_the_test_set_gives_the_censoring_distribution(project: Path, caplog) -> None:
    layout, config = load_project(project, NO_REPORT)
    layout.labels("BRCA").unlink()
    report = evaluate_models(layout, config, bootstrap=0, targets=["BRCA"])
    assert report.ok and report.summary is not None
    assert {r.censoring_source for r in report.summary.folds} == {"test"}
    assert "estimated on the test set" in caplog.text


def test_summary_keeps_other_targets_rows(tmp_path: Path) -> None:
    """Per-target runs (Slurm tasks) add their rows to summary.csv instead of replacing the file."""
    from steph.evaluation.summary import write_summary
    from steph.fileio import read_csv, write_csv

    path = tmp_path / "summary.csv"
    write_csv(
        path, ["target", "method", "fold", "metric", "value"], [["BLCA", "steph", "0", "c_index", 0.61]]
    )

    nothing_new = SimpleNamespace(folds=[], per_target={}, over_targets={}, metrics=[])
    write_summary(path, nothing_new)  # type: ignore[arg-type]
    rows = read_csv(path)
    assert [(r["target"], r["method"], r["fold"], r["metric"], float(r["value"])) for r in rows] == [
        ("BLCA", "steph", "0", "c_index", 0.61)
    ]
    assert not (tmp_path / "summary.csv.lock").exists()
