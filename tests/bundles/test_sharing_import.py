"""`import-sources` with bundles a hostile lab made: valid hashes, crafted content (issue #32).

Each bundle is re-signed (every hash recomputed, tests/_crafted_bundles.py), so only checks of
the content can refuse it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _crafted_bundles import THETA0_META, abmil_state, lab_b, sources_card, vector_like, write_sources

import steph.bundles.sources as sources_module
from steph.bundles.sources import import_sources
from steph.checkpoints import state_sha256
from steph.config import load_project
from steph.errors import ConsistencyError, DataError, StephError
from steph.theta0 import create_theta0, load_theta0


@pytest.fixture
def project(tmp_path: Path):
    return load_project(lab_b(tmp_path / "B"))


def test_a_failed_import_installs_no_theta0(project, tmp_path: Path) -> None:
    layout, config = project
    theta0 = abmil_state(seed=3)
    card = sources_card(abmil_state(seed=4), {"BLCA": [0]})  # names another theta0's sha256
    bad = write_sources(tmp_path / "bad.safetensors", theta0=theta0, card=card)
    with pytest.raises(ConsistencyError, match="theta0"):
        import_sources(layout, config, bad)
    assert not layout.theta0.exists() and not layout.theta0_meta.exists()
    honest = write_sources(tmp_path / "honest.safetensors", theta0=abmil_state(seed=5))
    assert import_sources(layout, config, honest).ok


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda v: {**v, "pred_head.weight": torch.zeros(3, 16)}, r"pred_head\.weight \[3, 16\].*\[8, 16\]"),
        (lambda v: {**v, "feat_proj.0.bias": torch.full((16,), float("nan"))}, "not finite"),
        (lambda v: {k: t for k, t in v.items() if k != "pred_head.bias"}, "missing pred_head.bias"),
        (lambda v: {**v, "extra.weight": torch.zeros(2)}, "unexpected extra.weight"),
        (lambda v: {**v, "pred_head.bias": torch.zeros(8, dtype=torch.int64)}, "int64"),
    ],
    ids=["shape", "nan", "missing-key", "extra-key", "dtype"],
)
def test_imported_vectors_are_checked_against_theta0(project, tmp_path: Path, change, match) -> None:
    layout, config = project
    theta0 = abmil_state()
    bundle = write_sources(
        tmp_path / "v.safetensors",
        theta0=theta0,
        vectors={"task_vector/BLCA/fold_0": change(vector_like(theta0))},
    )
    with pytest.raises(DataError, match=match):
        import_sources(layout, config, bundle)
    assert not layout.task_vector_meta("BLCA", 0).exists() and not layout.theta0.exists()


@pytest.mark.parametrize(
    ("part", "cancer"),
    [
        ("task_vector/../fold_0", ".."),
        ("task_vector/brca/fold_0", "brca"),
        ("task_vector/BLCA/fold_1e3", "BLCA"),
        ("task_vector/BLCA/x/fold_0", "BLCA"),
        ("task_vector/BLCA/fold_-1", "BLCA"),
        ("weights/fold_0", "BLCA"),
    ],
)
def test_part_names_follow_the_layout_rules(project, tmp_path: Path, cli, part: str, cancer: str) -> None:
    layout, _ = project
    theta0 = abmil_state()
    card = sources_card(theta0, {cancer: [0]})
    bundle = write_sources(
        tmp_path / "p.safetensors", theta0=theta0, vectors={part: vector_like(theta0)}, card=card
    )
    result = cli("-p", layout.root, "import-sources", bundle)
    assert result.exit_code == 1, result.output
    assert "error:" in result.stderr and "Traceback" not in result.output
    assert not (layout.root / "fold_0.safetensors").exists() and not layout.theta0.exists()
    assert not list(layout.root.rglob("fold_*.safetensors"))


def test_a_part_the_card_does_not_describe_is_refused_before_anything_is_written(
    project, tmp_path: Path
) -> None:
    layout, config = project
    theta0 = abmil_state()
    card = sources_card(theta0, {"BLCA": [0]})
    vectors = {"task_vector/BLCA/fold_0": vector_like(theta0), "task_vector/LUAD/fold_0": vector_like(theta0)}
    bundle = write_sources(tmp_path / "c.safetensors", theta0=theta0, vectors=vectors, card=card)
    with pytest.raises(DataError, match="LUAD"):
        import_sources(layout, config, bundle)
    assert not layout.task_vector_meta("BLCA", 0).exists() and not layout.theta0.exists()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c["sources"]["BLCA"].update(patients="[/]"), "patients"),
        (lambda c: c.update(sources=[]), "sources"),
        (lambda c: c.update(architecture={"dim_in": "x"}), "architecture"),
        (lambda c: c.pop("encoder"), "encoder"),
    ],
)
def test_a_malformed_card_is_one_error(project, tmp_path: Path, edit, match) -> None:
    layout, config = project
    theta0 = abmil_state()
    card = sources_card(theta0, {"BLCA": [0]})
    edit(card)
    bundle = write_sources(tmp_path / "m.safetensors", theta0=theta0, card=card)
    with pytest.raises(StephError, match=match):
        import_sources(layout, config, bundle)
    assert not layout.theta0.exists()


def test_a_project_theta0_is_compared_with_the_bundles_own(project, tmp_path: Path) -> None:
    layout, config = project
    mine = create_theta0(layout, config, 128)
    foreign = abmil_state(seed=11)
    card = sources_card(foreign, {"BLCA": [0]})
    card["theta0_sha256"] = mine.sha256  # the card claims this project's theta0
    bundle = write_sources(tmp_path / "f.safetensors", theta0=foreign, card=card)
    with pytest.raises(ConsistencyError, match="theta0"):
        import_sources(layout, config, bundle)
    assert not layout.task_vector_meta("BLCA", 0).exists()


def test_two_concurrent_imports_of_different_theta0_cannot_both_succeed(
    project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second import runs to completion between the first one's checks and its install."""
    layout, config = project
    first = write_sources(tmp_path / "1.safetensors", theta0=abmil_state(seed=21))
    second = write_sources(tmp_path / "2.safetensors", theta0=abmil_state(seed=22))
    original, calls = sources_module.check_compatible, []

    def interleaved(*args, **kwargs):
        original(*args, **kwargs)
        if not calls:
            calls.append(1)
            assert import_sources(layout, config, second).ok

    monkeypatch.setattr(sources_module, "check_compatible", interleaved)
    with pytest.raises(ConsistencyError, match="theta0"):
        import_sources(layout, config, first)
    assert load_theta0(layout).sha256 == state_sha256(abmil_state(seed=22), THETA0_META)


def test_two_import_processes_of_different_theta0_one_wins(project, tmp_path: Path) -> None:
    """Two real `stephctl import-sources` processes at once, each with another theta0."""
    import subprocess
    import sys

    layout, _ = project
    bundles = [write_sources(tmp_path / f"{s}.safetensors", theta0=abmil_state(seed=s)) for s in (31, 32)]
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "stephctl", "-p", str(layout.root), "import-sources", str(b)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for b in bundles
    ]
    outcomes = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in outcomes) == [0, 1], outcomes
    loser = next(err for code, err in outcomes if code == 1)
    assert "theta0" in loser and "Traceback" not in loser
    winner = bundles[[code for code, _ in outcomes].index(0)]
    assert load_theta0(layout).sha256 == state_sha256(
        abmil_state(seed=31 if winner == bundles[0] else 32), THETA0_META
    )
