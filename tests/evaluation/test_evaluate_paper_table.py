"""evaluate's paper table layout: rows in the paper's order, averages and relative changes."""

from __future__ import annotations

import math

import pytest

from steph.evaluation.summary import MethodSummary, Summary
from steph.evaluation.tables import comparison_tables, paper_table

C = {
    "BRCA": {
        "cancer-specific": 0.60,
        "steph-top3": 0.70,
        "adamerging": 0.55,
        "adamerging-hypernet": 0.66,
        "ties": 0.5,
    },
    "BLCA": {
        "cancer-specific": 0.50,
        "steph-top3": 0.62,
        "adamerging": 0.57,
        "adamerging-hypernet": 0.64,
        "ties": 0.5,
    },
}


def _summary(c: dict[str, dict[str, float]]) -> Summary:
    per_target = {
        t: {
            m: MethodSummary(
                t,
                m,
                [0, 1],
                [],
                mean={"c_index": v},
                std={"c_index": 0.01},
                ci={"c_index": (math.nan, math.nan)},
            )
            for m, v in methods.items()
        }
        for t, methods in c.items()
    }
    return Summary(["c_index"], "cancer-specific", 0.95, per_target, {}, [], [])


def test_paper_table_rows_averages_and_changes() -> None:
    table = paper_table(_summary(C))
    assert table is not None
    assert table.columns[:4] == ["method", "BRCA", "BLCA", "average"]
    labels = [r[0] for r in table.rows]
    # the paper's order; `ties` (data-free) is not a row of the paper's table
    assert labels == ["Cancer-specific", "AdaMerging", "AdaMerging + hypernetwork", "STEPH"]
    steph = table.rows[3]
    avg = (0.70 + 0.62) / 2
    assert steph[3] == f"{avg:.4f}"
    assert steph[4] == f"{100 * (avg / 0.55 - 1):+.2f}%"
    hyper = table.rows[2]
    assert hyper[5] == f"{(0.55 + 0.57) / 2:.4f} -> {(0.66 + 0.64) / 2:.4f}"
    assert table.rows[1][5] == ""
    assert table.title in [t.title for t in comparison_tables(_summary(C), resamples=0)]


def test_no_paper_table_for_two_methods_and_undefined_averages() -> None:
    two = {t: {m: v for m, v in ms.items() if m in ("cancer-specific", "steph-top3")} for t, ms in C.items()}
    assert paper_table(_summary(two)) is None
    missing = {"BRCA": dict(C["BRCA"]), "BLCA": {k: v for k, v in C["BLCA"].items() if k != "adamerging"}}
    table = paper_table(_summary(missing))
    row = next(r for r in table.rows if r[0] == "AdaMerging")
    assert row[2] == "undefined" and row[3] == "undefined"


@pytest.mark.parametrize(
    ("run", "label"),
    [
        ("steph-top3", "STEPH"),
        ("steph-dense", "STEPH, no sparsity (all sources)"),
        ("surgery-adamerging-gamma0.05-hypernet", "Surgery AM + hypernetwork"),
        ("roupkt-top2", "ROUPKT"),
        ("task-arithmetic", None),
    ],
)
def test_paper_rows_of_run_folders(run: str, label: str | None) -> None:
    from steph.merging.paper import paper_row

    assert paper_row(run) == label
