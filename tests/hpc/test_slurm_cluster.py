"""The HPC path on a real Slurm (``-m slurm``): a single-node cluster started by
``.ci/slurm-cluster.sh`` runs the arrays that ``stephctl slurm --submit`` writes.

Every job asks for one CPU (:data:`_slurm.RESOURCES`), so two tasks run at once on the 2-CPU CI
machine. Units are few and tiny: the cost is Python's start-up per array task, which is why most
arrays here run several units per task.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _cohorts import make_feature_project
from _slurm import completions, outputs, queued, sacct_states, slide_project, stephctl, submit, wait

from steph.config import load_project
from steph.fileio import TMP_PREFIX
from steph.locks import LOCK_SUFFIX

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(LOCK_SUFFIX) or p.name.startswith(TMP_PREFIX)]


def _same_outputs(a: Path, b: Path) -> None:
    """Models, task vectors, merged models and predictions byte-identical; features equal arrays."""
    left, right = outputs(a), outputs(b)
    assert sorted(left) == sorted(right)
    for name in left:
        if name.endswith(".h5"):
            with h5py.File(a / name) as x, h5py.File(b / name) as y:
                assert np.array_equal(x["features"][()], y["features"][()]), name
        else:
            assert left[name] == right[name], name


@contextlib.contextmanager
def _threads_of_a_task() -> Iterator[None]:
    """The local run with the intra-op threads of an array task (``--cpus 1``: stephctl runs a
    task on the CPUs Slurm gives it, steph.threads). Floating-point sums depend on how the work
    is split between threads, so outputs are byte-identical only at the same thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _all_completed(env: dict[str, str], ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    done = completions(env, ids)
    assert done and all(records == [("COMPLETED", "0:0")] for records in done.values()), done
    return done


def test_chain_through_submit_matches_a_local_run(slurm_cluster, cli, tmp_path: Path) -> None:
    """extract -> train-source -> task-vector -> merge -> evaluate as chained arrays of several
    units per task; every output equals a local run's."""
    env = slurm_cluster
    root = slide_project(tmp_path / "cluster")
    local = tmp_path / "local"
    shutil.copytree(root, local)
    ids = submit(
        root,
        "extract", "train-source", "task-vector", "merge", "evaluate", "--units-per-task", "8",
        "--stage-options", "merge=--target BRCA --method task-arithmetic",
        "--stage-options", "evaluate=--target BRCA",
        env=env,
    )  # fmt: skip
    assert list(ids) == ["extract", "train-source", "task-vector", "merge", "evaluate"]
    assert wait(list(ids.values()), env, timeout=900) == []
    done = _all_completed(env, list(ids.values()))
    assert len(done) == 5  # one array task per stage: 2 shards, 4 models, 4 vectors, 2 merges, 1 target

    for args in (
        ("extract",),
        ("train-source",),
        ("task-vector",),
        ("merge", "--target", "BRCA", "--method", "task-arithmetic"),
        ("evaluate", "--target", "BRCA"),
    ):
        with _threads_of_a_task():
            result = cli("-p", local, *args)
        assert result.exit_code == 0, result.output
    _same_outputs(root, local)
    assert (root / "results" / "summary.csv").is_file() and _leftovers(root) == []


def test_cancelled_task_is_resubmitted_with_pending(slurm_cluster, cli, tmp_path: Path) -> None:
    """scancel one array task; `--pending` resubmits exactly that unit; the models equal a local run's."""
    env = slurm_cluster
    root = make_feature_project(tmp_path / "cluster", cancers=("BRCA", "BLCA"), n_patients=10, folds=2)
    local = tmp_path / "local"
    shutil.copytree(root, local)
    ids = submit(root, "train-source", "--max-parallel", "2", env=env)
    job = ids["train-source"]
    subprocess.run(["scancel", f"{job}_3"], env=env, check=True)
    assert wait([job], env, timeout=600) == []
    listed = stephctl(root, "train-source", "--list-tasks", env=env).stdout.splitlines()
    assert [line.split("\t")[2] for line in listed] == ["done", "done", "done", "pending"]

    again = stephctl(root, "slurm", "train-source", "--pending", "--gpus", "0", "--cpus", "1", "--mem", "1500M",
                     "--submit", "--json", env=env)  # fmt: skip
    assert again.returncode == 0, again.stderr
    (row,) = json.loads(again.stdout)["jobs"]
    assert row["array"] == "3"
    assert wait([row["job_id"]], env, timeout=600) == []
    with _threads_of_a_task():
        assert cli("-p", local, "train-source").exit_code == 0
    _same_outputs(root, local)


def test_node_down_during_a_job_requeues_and_nothing_is_lost(slurm_cluster, tmp_path: Path) -> None:
    """The node goes down while a task trains: Slurm requeues it (--requeue), the rerun reclaims
    the dead task's lock and finishes, and the log keeps both attempts (--open-mode=append)."""
    env = slurm_cluster
    root = make_feature_project(tmp_path / "cluster", cancers=("BRCA",), n_patients=10, folds=2)
    layout, _ = load_project(root)
    ids = submit(root, "train-source", "--units-per-task", "2", "--", "--epochs", "150", env=env)
    # the rerun of the requeued task starts once its old credential expired (cred_expire=30)
    job = ids["train-source"]
    lock = layout.model_weights("BRCA", 0).with_name("model.safetensors" + LOCK_SUFFIX)
    wait([job], env, timeout=600, until=lambda q: lock.exists() or not q, poll=0.2)
    assert lock.exists(), "the task ended before the node went down"
    node = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N"], env=env, capture_output=True, text=True
    ).stdout.split()[0]
    subprocess.run(
        ["scontrol", "update", f"nodename={node}", "state=down", "reason=test"], env=env, check=True
    )
    try:
        wait([job], env, timeout=60, until=lambda q: bool(q) and q[0]["state"] == "PENDING")
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], env=env, check=True)
    assert wait([job], env, timeout=600) == []
    records = completions(env, [job])
    assert records == {f"{job}_0": [("NODE_FAIL", "0:0"), ("COMPLETED", "0:0")]}, records
    assert all(layout.model_meta("BRCA", k).is_file() for k in (0, 1))
    assert _leftovers(root) == []
    (log,) = (root / "logs" / "slurm").glob(f"train-source-{job}_0.log")
    text = log.read_text()
    assert "NODE FAILURE" in text and "reclaimed the lock of dead process" in text


def test_failed_task_stops_its_dependant_and_status_agrees_with_sacct(slurm_cluster, tmp_path: Path) -> None:
    """A task whose features are unreadable exits 2; its afterok dependant never runs; status
    names the unit and the file, sacct the exit code."""
    env = slurm_cluster
    root = make_feature_project(tmp_path / "cluster", cancers=("BRCA", "BLCA"), n_patients=10, folds=2)
    layout, config = load_project(root)
    bad = sorted(layout.features_dir(config.encoder).glob("BLCA-*.h5"))[0]
    bad.write_bytes(bad.read_bytes()[:100])
    ids = submit(root, "train-source", "task-vector", "--units-per-task", "2", env=env)
    train, vectors = ids["train-source"], ids["task-vector"]

    def stuck(queue: list[dict[str, str]]) -> bool:
        return all(r["id"].startswith(vectors) and r["reason"] == "DependencyNeverSatisfied" for r in queue)

    queue = wait([train, vectors], env, timeout=600, until=stuck)
    assert queue and all(r["reason"] == "DependencyNeverSatisfied" for r in queue), queue
    subprocess.run(["scancel", vectors], env=env, check=True)

    done = completions(env, [train])
    assert done == {f"{train}_0": [("COMPLETED", "0:0")], f"{train}_1": [("FAILED", "2:0")]}, done
    assert ("FAILED", "2:0") in [r for records in sacct_states(env).values() for r in records]
    status = json.loads(stephctl(root, "status", "--json", env=env).stdout)
    by_stage = {s["stage"]: s for s in status["stages"]}
    assert by_stage["train-source"]["missing"] == ["BLCA/fold_0", "BLCA/fold_1"]
    assert by_stage["features"]["missing"] == [bad.stem] and bad.stem in by_stage["features"]["notes"][0]
    assert not any(layout.task_vector_meta(c, k).exists() for c in ("BRCA", "BLCA") for k in (0, 1))
    assert completions(env, [vectors]) == {vectors: [("CANCELLED", "0:0")]}  # never ran


def test_two_arrays_of_one_stage_both_complete_their_chains(slurm_cluster, tmp_path: Path) -> None:
    """Two chains over the same units at once: the tasks that find a unit held by the other array
    wait for it and verify it, so both arrays and both dependants complete."""
    env = slurm_cluster
    root = make_feature_project(tmp_path / "cluster", cancers=("BRCA", "BLCA"), n_patients=10, folds=2)
    chain = (
        "train-source",
        "task-vector",
        "--units-per-task",
        "4",
        "--stage-options",
        "train-source=--epochs 30",
    )
    first = submit(root, *chain, env=env)
    second = submit(root, *chain, env=env)
    ids = [*first.values(), *second.values()]
    assert wait(ids, env, timeout=900) == []
    _all_completed(env, ids)
    layout, _ = load_project(root)
    assert all(layout.task_vector_meta(c, k).is_file() for c in ("BRCA", "BLCA") for k in (0, 1))
    assert _leftovers(root) == []
    assert queued(ids, env) == []
