"""`stephctl evaluate` output formats, exit codes and the report files."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from steph.synthetic.results import write_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def project(empty_project: Path) -> Path:
    write_results(empty_project, targets=("BRCA", "BLCA"), folds=3, patients=60)
    return empty_project


def test_report_files_are_written_and_non_empty_pngs(project: Path, cli) -> None:
    result = cli("-p", project, "evaluate", "--target", "BRCA", "--bootstrap", "20")
    assert result.exit_code == 0, result.output
    report = project / "reports" / "BRCA"
    assert sorted(p.name for p in report.iterdir()) == [
        "cindex.png",
        "coefficients-steph.png",
        "km.png",
        "report.html",
    ]
    for png in report.glob("*.png"):
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    html = (report / "report.html").read_text()
    for name in ("cindex.png", "km.png", "coefficients-steph.png", "log-rank", "ddof=1"):
        assert name in html
    assert "C-index" in result.output and "+" in result.output and "report BRCA" in result.output
    assert not (project / "reports" / "BLCA").exists()


def test_csv_format_prints_the_summary_rows(project: Path, cli) -> None:
    result = cli("-p", project, "evaluate", "--format", "csv", "--bootstrap", "0", "--no-report")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["target", "method", "fold", "metric", "value"]
    assert (project / "results" / "summary.csv").read_text().splitlines() == result.stdout.splitlines()
    assert {r["target"] for r in rows} == {"BLCA", "BRCA", "mean"}
    assert not (project / "reports" / "BRCA").exists()


def test_json_and_markdown_formats(project: Path, cli) -> None:
    out = cli(
        "-p",
        project,
        "evaluate",
        "--json",
        "--bootstrap",
        "0",
        "--no-report",
        "--method",
        "steph",
        "--method",
        "cancer-specific",
    )
    assert out.exit_code == 0
    data = json.loads(out.stdout)
    assert data["ok"] and data["counts"]["done"] == 12
    assert [t["title"] for t in data["tables"]] == ["BLCA", "BRCA", "mean over 2 targets"]
    assert data["summary"]["std"] == "sample standard deviation over folds (ddof=1)"
    md = cli("-p", project, "evaluate", "--format", "markdown", "--bootstrap", "0", "--no-report")
    assert md.exit_code == 0
    assert "### BRCA" in md.stdout and "| method | folds | C-index |" in md.stdout and "%" in md.stdout


def test_a_bad_file_exits_2_and_names_it(project: Path, cli) -> None:
    path = project / "results" / "BRCA" / "steph" / "fold_0" / "predictions.csv"
    path.write_text(path.read_text().replace("risk", "score", 1))
    result = cli("-p", project, "evaluate", "--bootstrap", "0", "--no-report")
    assert result.exit_code == 2
    assert "BRCA/steph/fold_0" in result.output and "missing column" in result.output
    assert "partial" in result.output


def test_unknown_target_is_a_user_error(project: Path, cli) -> None:
    result = cli("-p", project, "evaluate", "--target", "LUAD")
    assert result.exit_code == 1
    assert "LUAD" in result.output and "BLCA, BRCA" in result.output


def test_no_results_is_a_user_error(empty_project: Path, cli) -> None:
    result = cli("-p", empty_project, "evaluate")
    assert result.exit_code == 1 and "stephctl train-source" in result.output


def test_targets_on_different_folds_get_no_mean_over_targets(empty_project: Path, cli) -> None:
    """A source evaluated on one fold is not averaged with a target's three (the demo's case)."""
    methods = {"cancer-specific": 0.55, "roupkt": 0.6, "steph": 0.75}
    layout = write_results(empty_project, targets=("BRCA", "BLCA"), methods=methods, folds=3, patients=60)
    for k in (1, 2):
        layout.split("BLCA", k).unlink()
        for method in layout.result_methods("BLCA"):
            shutil.rmtree(layout.predictions("BLCA", method, k).parent)
    out = cli("-p", empty_project, "evaluate", "--json", "--bootstrap", "0", "--no-report")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert [t["title"] for t in data["tables"]] == ["BLCA", "BRCA", "paper layout: C-index"]
    assert data["summary"]["over_targets"] == {}
    warning = next(w for w in data["summary"]["warnings"] if w.startswith("steph: no mean over targets"))
    assert "BLCA: fold(s) 0" in warning and "BRCA: fold(s) 0, 1, 2" in warning
    paper = data["tables"][-1]
    average = paper["columns"].index("average")
    assert {row[average] for row in paper["rows"]} == {"undefined"}
