"""Prediction inputs: manifest rows that fail alone, slide files as patients, the ensemble's hazards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from steph.errors import DataError, MissingArtifactError
from steph.evaluation.predictors import hazards_of
from steph.fileio import write_csv
from steph.layout import ProjectLayout
from steph.predict.inputs import read_manifest, slide_inputs
from steph.survival import survival_curve


def test_bad_rows_fail_their_patient_only(tmp_path: Path) -> None:
    (tmp_path / "a.svs").write_bytes(b"x")
    manifest = tmp_path / "m.csv"
    write_csv(
        manifest,
        ["patient_id", "slide_id", "path", "mpp"],
        [
            ["P1", "S1", "a.svs", "0.25"],
            ["P1", "S2", "", ""],
            ["P2", "DUP", "", ""],
            ["P3", "DUP", "", ""],
            ["P4", "S4", "", "abc"],
            ["P5", "..", "", ""],
            ["P6", "S6", "missing.svs", ""],
            ["", "S7", "", ""],
            ["P 8", "S8", "", ""],
        ],
    )
    inputs = read_manifest(manifest, ProjectLayout(tmp_path))
    assert [p.patient_id for p in inputs.patients] == ["P1"]
    p1 = inputs.patients[0]
    assert [(s.slide_id, s.path, s.mpp) for s in p1.slides] == [
        ("S1", tmp_path / "a.svs", 0.25),
        ("S2", None, None),
    ]
    problems = {k: str(v) for k, v in inputs.problems.items()}
    assert set(problems) == {"P2", "P3", "P4", "P5", "P6", "row 9", "P 8"}
    assert "slide DUP is listed 2 times" in problems["P2"] and "row 5" in problems["P3"]
    assert "mpp 'abc' is not a number" in problems["P4"]
    assert "not a safe file name" in problems["P5"] and "not a safe file name" in problems["P 8"]
    assert isinstance(inputs.problems["P6"], MissingArtifactError) and "missing.svs" in problems["P6"]
    assert "must not be empty" in problems["row 9"]


def test_a_manifest_without_the_columns_or_rows_is_refused_whole(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("patient,slide\nA,B\n")
    with pytest.raises(DataError, match="needs columns patient_id and slide_id"):
        read_manifest(bad, ProjectLayout(tmp_path))
    empty = tmp_path / "empty.csv"
    empty.write_text("patient_id,pathology_id\n")
    with pytest.raises(DataError, match="no data rows"):
        read_manifest(empty, ProjectLayout(tmp_path))


def test_slide_files_are_one_patient_each(tmp_path: Path) -> None:
    for name in ("a/X-1.svs", "b/X-1.tif", "c/Y-2.svs"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    inputs = slide_inputs(
        [tmp_path / "a/X-1.svs", tmp_path / "b/X-1.tif", tmp_path / "c/Y-2.svs", tmp_path / "Z.svs"]
    )
    assert [(p.patient_id, p.slides[0].slide_id) for p in inputs.patients] == [("Y-2", "Y-2")]
    assert "two slide files are named X-1" in str(inputs.problems["X-1"])
    assert "slide file not found" in str(inputs.problems["Z"])


def test_hazards_of_inverts_the_survival_curve() -> None:
    """h_1 = 1 - S_1, h_j = 1 - S_j / S_{j-1}, checked against a plain loop."""
    gen = torch.Generator().manual_seed(0)
    hazards = torch.rand(5, 8, generator=gen, dtype=torch.float64) * 0.9
    surv = survival_curve(hazards)
    back = hazards_of(surv).numpy()
    s = surv.numpy()
    loop = np.empty_like(s)
    for i in range(s.shape[0]):
        previous = 1.0
        for j in range(s.shape[1]):
            loop[i, j] = 1.0 - s[i, j] / previous
            previous = s[i, j]
    np.testing.assert_allclose(back, loop, atol=1e-15)
    np.testing.assert_allclose(back, hazards.numpy(), atol=1e-12)
    mean = (survival_curve(hazards[:2]) + survival_curve(hazards[2:4])) / 2  # an ensemble of two
    assert torch.allclose(-survival_curve(hazards_of(mean)).sum(1), -mean.sum(1), atol=1e-12)
