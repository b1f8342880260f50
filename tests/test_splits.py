"""`stephctl splits`: stratified patient-level folds, no leakage, seeded, never overwrites by accident."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steph.config import load_project
from steph.data.cohort import load_cohort, load_split
from steph.errors import ConfigError
from steph.fileio import write_csv
from steph.layout import ProjectLayout
from steph.splits import TIME_BINS, make_folds


def _cohort(n: int, seed: int = 0, event_rate: float = 0.4) -> tuple[list[str], list[float], list[int]]:
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    return (
        ids,
        rng.integers(10, 4000, n).astype(float).tolist(),
        (rng.random(n) < event_rate).astype(int).tolist(),
    )


@pytest.fixture
def project(empty_project: Path) -> Path:
    layout = ProjectLayout(empty_project)
    for cancer, n in (("BRCA", 57), ("BLCA", 40)):
        ids, times, events = _cohort(n, seed=len(cancer) + n)
        rows = [[pid, f"{pid}-S1", int(t), e] for pid, t, e in zip(ids, times, events, strict=True)]
        write_csv(layout.labels(cancer), ["patient_id", "slide_id", "t", "e"], rows)
    return empty_project


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=6, max_value=80),
    folds=st.integers(min_value=2, max_value=6),
    val=st.sampled_from([0.0, 0.1, 0.25]),
    seed=st.integers(min_value=0, max_value=2**31),
    rate=st.floats(min_value=0.0, max_value=1.0),
)
def test_no_leakage_and_every_patient_tested_once(
    n: int, folds: int, val: float, seed: int, rate: float
) -> None:
    ids, times, events = _cohort(n, seed=seed % 1000, event_rate=rate)
    made = make_folds(ids, times, events, folds=folds, seed=seed, val_fraction=val)
    assert len(made) == folds
    tested = Counter(pid for fold in made for pid in fold.test)
    assert set(tested) == set(ids) and set(tested.values()) == {1}
    for fold in made:
        sets = [set(fold.train), set(fold.test), set(fold.val)]
        assert sum(map(len, sets)) == n == len(set().union(*sets))  # a partition: no patient twice
        assert fold.train and fold.test
        assert len(fold.val) == round(val * (n - len(fold.test)))
    sizes = [len(f.test) for f in made]
    assert max(sizes) - min(sizes) <= 1


def test_stratified_by_event_and_by_time() -> None:
    """Recomputed independently: per event status, time quantile groups; each fold gets floor or
    ceil of every group's share, so events per fold differ by at most one."""
    ids, times, events = _cohort(203, seed=3)
    folds = 5
    made = make_folds(ids, times, events, folds=folds, seed=11)
    fold_of = {pid: k for k, f in enumerate(made) for pid in f.test}
    event_counts = Counter(fold_of[pid] for pid, e in zip(ids, events, strict=True) if e)
    assert max(event_counts.values()) - min(event_counts.values()) <= 1
    t = np.array(times)
    for status in (0, 1):
        members = np.flatnonzero(np.array(events) == status)
        q = min(TIME_BINS, len(members) // folds)
        ranks = np.argsort(np.argsort(t[members], kind="stable"), kind="stable")
        group = ranks * q // len(members)  # quantile group of each member by its time rank
        for g in range(q):
            share = Counter(fold_of[ids[i]] for i in members[group == g])
            counts = [share.get(k, 0) for k in range(folds)]
            assert max(counts) - min(counts) <= 1, (status, g, counts)
    medians = [np.median([t[ids.index(p)] for p in f.test]) for f in made]
    assert max(medians) - min(medians) < 0.25 * np.median(t)  # follow-up is alike across folds


def test_seeded_and_deterministic() -> None:
    ids, times, events = _cohort(50)
    a = make_folds(ids, times, events, folds=5, seed=1, val_fraction=0.2)
    assert a == make_folds(ids, times, events, folds=5, seed=1, val_fraction=0.2)
    assert a != make_folds(ids, times, events, folds=5, seed=2, val_fraction=0.2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"folds": 1}, "at least 2 folds"),
        ({"folds": 60}, "cannot make 60 folds"),
        ({"val_fraction": 1.0}, "val"),
    ],
)
def test_bad_requests_are_refused(kwargs: dict, match: str) -> None:
    ids, times, events = _cohort(50)
    with pytest.raises(ConfigError, match=match):
        make_folds(ids, times, events, seed=0, **{"folds": 5, **kwargs})


def test_cli_writes_the_layout_train_source_reads_and_check_knows_it(project: Path, cli) -> None:
    result = cli("-p", project, "splits", "--folds", "4", "--val-fraction", "0.1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["done"] == 2
    layout, config = load_project(project)
    assert layout.split_folds("BRCA") == [0, 1, 2, 3]
    cohort = load_cohort(layout, config, "BRCA")
    split = load_split(layout, cohort, 0)  # what train-source reads
    assert split.val and not set(split.val) & set(split.train)
    first = layout.split("BRCA", 0).read_text()

    refused = cli("-p", project, "splits", "--cancer", "BRCA")
    assert refused.exit_code == 1 and "--overwrite" in refused.output
    assert layout.split("BRCA", 0).read_text() == first  # nothing written

    again = cli("-p", project, "splits", "--overwrite", "--folds", "4", "--val-fraction", "0.1")
    assert again.exit_code == 0 and layout.split("BRCA", 0).read_text() == first  # same seed, same files
    fewer = cli("-p", project, "splits", "--overwrite", "--folds", "3", "--seed", "7")
    assert fewer.exit_code == 0 and layout.split_folds("BRCA") == [0, 1, 2]  # fold 3 removed

    checked = cli("-p", project, "check", "--json")
    findings = json.loads(checked.stdout)["findings"]
    made = [f for f in findings if "made by `stephctl splits`" in f["message"]]
    assert {f["cancer"] for f in made} == {"BRCA", "BLCA"} and "seed 7" in made[0]["message"]
    assert not [f for f in findings if f["check"] in ("splits", "leakage") and f["level"] != "ok"]

    with layout.labels("BRCA").open("a") as fh:
        fh.write("NEW-1,NEW-1-S1,100,1\n")
    changed = json.loads(cli("-p", project, "check", "--json", "-c", "BRCA").stdout)["findings"]
    assert any("changed since the splits were made" in f["message"] for f in changed)


def test_docstring_examples() -> None:
    import doctest

    import steph.registry
    import steph.splits

    for module in (steph.splits, steph.registry):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
