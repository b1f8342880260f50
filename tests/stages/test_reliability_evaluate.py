"""Issue 16, items 3, 5, 6 and 10e/10h: evaluate reads records, not files; keeps other methods'
rows; draws intervals that exclude the mean; refuses incomplete predictions."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from _repo import REPO

from steph.config import load_project
from steph.evaluation.plots import plot_cindex
from steph.evaluation.summary import MethodSummary
from steph.hpc.status import project_status
from steph.pipeline.evaluate import evaluate_models
from steph.report import Status
from steph.synthetic.results import write_results

NO_REPORT = {"evaluate.report": False}
DOCS = REPO / "docs"


@pytest.fixture
def project(empty_project: Path) -> Path:
    write_results(empty_project, targets=("BRCA", "BLCA"), folds=3, patients=45)
    return empty_project


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_predictions_without_a_record_are_not_evaluated(project: Path) -> None:
    """Item 3: a unit killed after predictions.csv but before meta.json was counted as done."""
    layout, config = load_project(project, NO_REPORT)
    layout.result_record("BRCA", "steph", 2).unlink()  # killed before its record
    report = evaluate_models(layout, config, targets=["BRCA"], bootstrap=0)
    status = {item.key: item.status for item in report.items}
    assert status["BRCA/steph/fold_2"] is Status.FAILED and status["BRCA/steph/fold_1"] is Status.DONE
    assert "not finished" in next(i.message for i in report.items if i.key == "BRCA/steph/fold_2")
    assert not report.ok  # exit 2: a unit asked for is not done
    steph = report.summary.per_target["BRCA"]["steph"]
    assert steph.folds == [0, 1] and steph.missing_folds == [2]
    assert {r["fold"] for r in _rows(layout.summary) if r["method"] == "steph"} == {"0", "1", "mean", "std"}
    results = {(r["target"], r["method"]): r["folds"] for r in project_status(layout, config).results}
    assert results[("BRCA", "steph")] == [0, 1]  # status agrees


def test_evaluating_one_method_keeps_the_other_methods_rows(project: Path) -> None:
    """Item 6: `evaluate --target BRCA -m steph` deleted BRCA's other methods from summary.csv."""
    layout, config = load_project(project, NO_REPORT)
    evaluate_models(layout, config, bootstrap=0)
    before = _rows(layout.summary)
    count = sum(1 for r in before if r["target"] == "BRCA" and r["method"] == "cancer-specific")
    assert count > 0
    evaluate_models(layout, config, targets=["BRCA"], methods=["steph"], bootstrap=0)
    after = _rows(layout.summary)
    assert sum(1 for r in after if r["target"] == "BRCA" and r["method"] == "cancer-specific") == count

    def others(rows: list[dict[str, str]]) -> list[str]:  # every row but BRCA/steph's
        return sorted(str(r) for r in rows if (r["target"], r["method"]) != ("BRCA", "steph"))

    assert others(after) == others(before)  # kept as they were
    steph = [r for r in after if (r["target"], r["method"]) == ("BRCA", "steph")]
    assert {r["fold"] for r in steph} == {"0", "1", "2", "mean", "std"}


def test_docs_say_what_per_target_evaluates_keep() -> None:
    """Item 10h: docs/hpc.md said each per-target task rewrites summary.csv 'with its own target only'."""
    text = (DOCS / "hpc.md").read_text()
    assert "with its own target only" not in text
    assert "(target, method)" in text and "other rows are kept" in text


def test_plot_when_the_mean_lies_outside_its_interval(tmp_path: Path) -> None:
    """Item 5: `evaluate --bootstrap 10` crashed with "'yerr' must not contain negative values"."""
    summaries = {}
    for name, mean, low, high in (("cancer-specific", 0.60, 0.55, 0.65), ("steph", 0.70, 0.71, 0.78)):
        ms = MethodSummary("BRCA", name, [0, 1], [])
        ms.mean["c_index"], ms.ci["c_index"], ms.std["c_index"] = mean, (low, high), math.nan
        summaries[name] = ms
    path = plot_cindex(
        tmp_path / "c.png",
        "BRCA",
        summaries,
        {"steph": [0.7, 0.7]},
        reference="cancer-specific",
        confidence=0.95,
    )
    assert path.is_file() and path.stat().st_size > 0


def test_evaluate_with_ten_resamples_writes_the_report(project: Path) -> None:
    layout, config = load_project(project)
    report = evaluate_models(layout, config, targets=["BRCA"], bootstrap=10)
    assert report.ok and "BRCA" in report.reports


def test_predictions_missing_test_patients_fail_that_fold(project: Path) -> None:
    """Item 10e: a predictions.csv missing 3 of the fold's test patients was silently accepted."""
    layout, config = load_project(project, NO_REPORT)
    path = layout.predictions("BRCA", "steph", 1)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-3]) + "\n")
    report = evaluate_models(layout, config, targets=["BRCA"], bootstrap=0)
    item = next(i for i in report.items if i.key == "BRCA/steph/fold_1")
    assert item.status is Status.FAILED and "3 of 15 test patients" in item.message
    assert not report.ok


def _statuses(result) -> dict[str, str]:
    import json

    return {i["key"]: i["status"] for i in json.loads(result.stdout)["items"]}


@pytest.mark.parametrize(
    ("method", "stage"),
    [
        ("steph", "stephctl merge --target BRCA --method steph --fold 2"),
        ("cancer-specific", "stephctl train-source --cancer BRCA --fold 2"),
    ],
)
def test_an_unfinished_upstream_unit_fails_evaluate(project: Path, cli, method: str, stage: str) -> None:
    """Exit 0 means every unit asked for is done: predictions without their record used to be
    'skipped' with exit 0; now the fold fails (exit 2) and the hint names the stage that finishes it."""
    layout, _ = load_project(project)
    layout.result_record("BRCA", method, 2).unlink()
    result = cli("-p", project, "evaluate", "--bootstrap", "0", "--no-report", "--json")
    assert result.exit_code == 2, result.output
    status = _statuses(result)
    assert status[f"BRCA/{method}/fold_2"] == "failed" and status[f"BRCA/{method}/fold_1"] == "done"
    assert set(status.values()) == {"done", "failed"} and layout.summary.is_file()
    text = cli("-p", project, "evaluate", "--bootstrap", "0", "--no-report")
    assert text.exit_code == 2 and stage in text.output


def test_a_missing_fold_of_a_method_fails_evaluate(project: Path, cli) -> None:
    """A fold missing while other folds of its method exist is asked for and not done."""
    import shutil

    layout, _ = load_project(project)
    shutil.rmtree(layout.results_dir("BLCA", "steph", 0))
    result = cli("-p", project, "evaluate", "--bootstrap", "0", "--no-report", "--json")
    assert result.exit_code == 2, result.output
    assert _statuses(result)["BLCA/steph/fold_0"] == "failed"
    assert "stephctl merge --target BLCA --method steph --fold 0" in result.stdout


def test_a_method_never_run_for_a_target_fails_only_when_named(project: Path, cli) -> None:
    """Without -m, a method never run for a target is not asked for (exit 0); named with -m it is."""
    import shutil

    layout, _ = load_project(project)
    shutil.rmtree(layout.results_root / "BLCA" / "steph")
    plain = cli("-p", project, "evaluate", "--bootstrap", "0", "--no-report", "--json")
    assert plain.exit_code == 0, plain.output
    assert not [k for k in _statuses(plain) if k.startswith("BLCA/steph/")]
    named = cli("-p", project, "evaluate", "-m", "steph", "--bootstrap", "0", "--no-report", "--json")
    assert named.exit_code == 2, named.output
    status = _statuses(named)
    assert {k: v for k, v in status.items() if k.startswith("BLCA/")} == {
        f"BLCA/steph/fold_{k}": "failed" for k in range(3)
    }
    assert {v for k, v in status.items() if k.startswith("BRCA/")} == {"done"}
