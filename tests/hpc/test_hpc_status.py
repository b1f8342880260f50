"""`stephctl status` on a half-finished project: counts, missing units, failures, locks, leftovers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cohorts import make_feature_project

from steph.config import load_project
from steph.fileio import write_csv
from steph.hpc.status import project_status
from steph.locks import lock_path_for
from steph.pipeline.train_source import train_source_models


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(path: Path, pid: int, *, host: str | None = None, age_s: float = 0.0) -> Path:
    lock = lock_path_for(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    payload = {"host": host or socket.gethostname(), "pid": pid, "started": time.time() - age_s}
    lock.write_text(json.dumps(payload))
    return lock


@pytest.fixture(scope="module")
def half_done(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """BRCA trained (2 folds), BLCA not; one feature file missing; a stale and a live lock; a
    recorded extract failure; a temporary file left by a killed writer."""
    root = make_feature_project(tmp_path_factory.mktemp("status") / "p", n_patients=10, folds=2)
    layout, config = load_project(root)
    report = train_source_models(layout, config, cancers=["BRCA"])
    assert report.ok and len(report.items) == 2
    blca_features = sorted(layout.features_dir(config.encoder).glob("BLCA-*.h5"))
    blca_features[0].unlink()
    write_lock(layout.model_weights("BLCA", 0), dead_pid())
    write_lock(layout.model_weights("BLCA", 1), os.getpid())
    write_csv(
        layout.extract_failures(config.encoder),
        ["slide_id", "cancer", "path", "error", "hint", "time", "host"],
        [["BLCA-X", "BLCA", "slides/x.svs", "no tissue found", "", "2026-01-01T00:00:00", "node1"]],
    )
    (layout.model_dir("BLCA", 0) / ".tmp-123-abcd-model.safetensors").write_bytes(b"partial")
    return root, blca_features[0].stem


def test_status_counts_a_half_finished_project(half_done: tuple[Path, str]) -> None:
    root, removed = half_done
    layout, config = load_project(root)
    status = project_status(layout, config)
    features = status.stage("features")
    n_blca = features.groups["BLCA"][1]
    assert features.groups["BLCA"] == [n_blca - 1, n_blca]
    assert features.groups["BRCA"][0] == features.groups["BRCA"][1] > 0
    assert features.missing == [removed]
    train = status.stage("train-source")
    assert (train.done, train.total) == (2, 4)
    assert train.groups == {"BRCA": [2, 2], "BLCA": [0, 2]}
    assert train.missing == ["BLCA/fold_0", "BLCA/fold_1"]
    assert not train.complete
    vectors = status.stage("task-vector")
    assert (vectors.done, vectors.total) == (0, 4)
    merge = status.stage("merge")
    assert merge.total == 0 and any("top-k" in e for e in merge.errors)  # 1 source < top-k 5
    assert [(r["target"], r["method"], r["folds"]) for r in status.results] == [
        ("BRCA", "cancer-specific", [0, 1])
    ]
    assert status.summary_csv is None
    assert [(f["key"], f["error"]) for f in status.failures] == [("BLCA-X", "no tissue found")]
    locks = {Path(lock.path).parent.name: lock.stale for lock in status.locks}
    assert locks == {"fold_0": True, "fold_1": False}
    assert [Path(p).name for p in status.temp_files] == [".tmp-123-abcd-model.safetensors"]


def test_old_lock_on_another_host_is_stale(tmp_path: Path) -> None:
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",), n_patients=6, folds=1)
    layout, config = load_project(root)
    write_lock(layout.model_weights("BRCA", 0), 12345, host="elsewhere", age_s=49 * 3600)
    write_lock(layout.task_vector("BRCA", 0), 12345, host="elsewhere", age_s=60)
    stale = {
        Path(lock.path).relative_to(layout.root).parts[0]: lock.stale
        for lock in project_status(layout, config).locks
    }
    assert stale == {"models": True, "task_vectors": False}  # too old / another host, young


def test_status_cli_json_and_table(half_done: tuple[Path, str], cli) -> None:
    root, _ = half_done
    result = cli("-p", root, "status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    stages = {s["stage"]: s for s in data["stages"]}
    assert (stages["train-source"]["done"], stages["train-source"]["total"]) == (2, 4)
    assert stages["train-source"]["complete"] is False
    assert sum(lock["stale"] for lock in data["locks"]) == 1
    table = cli("-p", root, "status")
    assert table.exit_code == 0
    for text in (
        "train-source",
        "2/4",
        "BLCA/fold_0",
        "stale",
        "running",
        "no tissue found",
        "--clear-stale-locks",
    ):
        assert text in table.output


HEAVY = ("torch", "timm", "safetensors")
"""Modules ``stephctl status`` and ``stephctl --help`` must not import (torch alone costs seconds)."""

_RUN_AND_LIST_IMPORTS = f"""
import json, sys
from stephctl.main import main
sys.argv = ["stephctl", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"exit": code, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def _imports_of(*args: object) -> tuple[dict[str, object], str]:
    """Run ``stephctl ARGS`` in a fresh interpreter: its exit code and the heavy modules it
    imported (last line of stdout), and the output before it."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST_IMPORTS, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def test_status_imports_no_torch(half_done: tuple[Path, str]) -> None:
    """Every stage is planned (features opened, models counted, merge methods checked and
    named) from names, records and headers: no torch, so status costs well under a CPU-second."""
    root, _ = half_done
    found, output = _imports_of("-p", root, "status")
    assert found == {"exit": 0, "heavy": []}, output
    assert "train-source" in output and "2/4" in output and "merge" in output


def test_help_imports_no_torch() -> None:
    found, output = _imports_of("--help")
    assert found == {"exit": 0, "heavy": []}, output
    assert "status" in output
