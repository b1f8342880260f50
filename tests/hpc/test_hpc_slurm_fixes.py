"""What a real Slurm found (issue #31), each fixed and tested here without a cluster: extract's
done is the completeness flag, --pending keeps --overwrite stages, a broken chain cancels what it
submitted, resources are checked against sinfo, requeued logs append, one exit-code rule, a live
lock is waited for, status is honest about unreadable feature files, several units per task."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from _cohorts import make_feature_project
from _hpc import install_fake_sbatch, recorded, set_config
from _slides import TEST_EXTRACT_CONFIG, row, write_manifest, write_slide

from steph.config import SlurmConfig, load_project
from steph.extraction.h5format import is_complete
from steph.hpc.resources import NodeResources, resource_problems
from steph.hpc.slurm import ArrayJob, render_job_script, submit_jobs
from steph.layout import ProjectLayout
from steph.locks import hold

BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="needs bash")


def _fake_tool(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / name
    tool.write_text("#!/bin/bash\n" + body)
    tool.chmod(0o755)
    return tool


@pytest.fixture
def slide_project(empty_project: Path) -> Path:
    ids = [f"S{i}" for i in range(2)]
    for sid in ids:
        write_slide(empty_project / "slides" / f"{sid}.tif", 0.5, seed=int(sid[1:]))
    write_manifest(empty_project, [row(sid, f"slides/{sid}.tif") for sid in ids])
    set_config(empty_project, {**TEST_EXTRACT_CONFIG, "slurm.slides_per_task": 10, "cancers": ["BRCA"]})
    labels = empty_project / "labels" / "BRCA.csv"
    labels.parent.mkdir(parents=True, exist_ok=True)
    labels.write_text("patient_id,slide_id,t,e\nP0,S0,100,1\nP1,S1,200,0\n")
    return empty_project


@needs_bash
def test_truncated_feature_file_is_pending_for_slurm_and_redone_by_its_task(
    slide_project: Path, cli, tmp_path: Path
) -> None:
    """Items 1 and 8: a truncated features/<encoder>/<slide>.h5 is not done (was: done because it
    existed): --pending submits its shard, its task re-extracts it, and status does not count it."""
    assert cli("-p", slide_project, "extract").exit_code == 0
    layout, config = load_project(slide_project)
    broken = layout.own_features(config.encoder, "S1")
    with broken.open("r+b") as handle:
        handle.truncate(broken.stat().st_size // 2)
    assert cli("-p", slide_project, "extract", "--list-tasks").stdout == "0\tshard_0_of_1\tpending\n"

    status = json.loads(cli("-p", slide_project, "status", "--json").stdout)
    features = status["stages"][0]
    assert (features["stage"], features["done"], features["total"]) == ("features", 1, 2)
    assert features["missing"] == ["S1"] and "S1" in features["notes"][0]
    assert "S1" in cli("-p", slide_project, "status").stdout  # the table says it too

    env, calls = install_fake_sbatch(tmp_path)
    pending = cli("-p", slide_project, "slurm", "extract", "--pending", "--submit", "--gpus", "0", env=env)
    assert pending.exit_code == 0, pending.output
    assert "#SBATCH --array=0" in recorded(calls)[0][1].splitlines()

    redone = cli("-p", slide_project, "extract", "--task-index", "0", "--json")
    assert redone.exit_code == 0, redone.output
    items = {i["key"]: i["status"] for i in json.loads(redone.stdout)["items"]}
    assert items == {"S0": "skipped", "S1": "done"}
    assert is_complete(broken)


@needs_bash
def test_pending_keeps_a_stage_whose_options_ask_for_overwrite(cli, tmp_path: Path) -> None:
    """Item 2: `--pending` with --overwrite in a stage's options submits that stage's every task
    (was: dropped as 'nothing pending')."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",), n_patients=10, folds=2)
    assert cli("-p", root, "train-source").exit_code == 0
    env, calls = install_fake_sbatch(tmp_path)
    result = cli(
        "-p", root, "slurm", "train-source", "task-vector", "--pending", "--submit", "--json",
        "--stage-options", "train-source=--overwrite",
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    jobs = json.loads(result.stdout)["jobs"]
    assert [(j["stage"], j["array"]) for j in jobs] == [("train-source", "0-1"), ("task-vector", "0-1")]
    assert recorded(calls)[0][1].rstrip().endswith('--overwrite --task-index "$SLURM_ARRAY_TASK_ID"')


def _two_jobs() -> list[ArrayJob]:
    return [ArrayJob("train-source", (0, 1), n_tasks=2), ArrayJob("task-vector", (0, 1), n_tasks=2)]


@needs_bash
def test_a_chain_refused_part_way_cancels_what_it_submitted(tmp_path: Path) -> None:
    """Item 3: sbatch refuses the second job: the first is cancelled and named (was: left queued
    and its id never printed)."""
    from steph.hpc.slurm import SubmitError

    layout = ProjectLayout(tmp_path / "p")
    bin_dir = tmp_path / "bin"
    sbatch = _fake_tool(
        bin_dir,
        "sbatch",
        'n=$(cat "$0.n" 2>/dev/null || echo 0); echo $((n + 1)) > "$0.n"; cat > /dev/null\n'
        'if [ "$n" -ge 1 ]; then echo "sbatch: error: Invalid generic resource (gres) specification" >&2; exit 1; fi\n'
        "echo 'Submitted batch job 41'\n",
    )
    scancel = _fake_tool(bin_dir, "scancel", f'echo "$@" >> {bin_dir}/cancelled\n')
    with pytest.raises(SubmitError) as caught:
        submit_jobs(_two_jobs(), layout, SlurmConfig(), sbatch=str(sbatch), scancel=str(scancel))
    assert "gres" in caught.value.message and "were cancelled (train-source 41)" in caught.value.message
    assert (bin_dir / "cancelled").read_text() == "41\n"

    # scancel fails: the ids and the command to cancel them are in the error
    (bin_dir / "sbatch.n").unlink()
    failing = _fake_tool(bin_dir, "scancel-broken", "echo 'scancel: error: not allowed' >&2; exit 1\n")
    with pytest.raises(SubmitError) as caught:
        submit_jobs(_two_jobs(), layout, SlurmConfig(), sbatch=str(sbatch), scancel=str(failing))
    assert "still queued (train-source 41)" in caught.value.message
    assert "scancel 41" in (caught.value.hint or "")


def _node(**kw: object) -> NodeResources:
    values: dict = {
        "partition": "debug",
        "default": True,
        "cpus": 2,
        "mem_mb": 4000,
        "gpus": 0,
        "time_minutes": None,
    }
    values.update(kw)
    return NodeResources(**values)


def test_resource_problems_say_what_does_not_fit() -> None:
    """Item 4: cpus, mem, gpus and time are compared with the partition's nodes."""
    fits = SlurmConfig(cpus=2, mem="3G", gpus=0, time="01:00:00")
    assert resource_problems(fits, [0, 0], [_node()]) == []
    assert resource_problems(SlurmConfig(), [1], None) == []  # no sinfo: nothing checked
    problems = resource_problems(SlurmConfig(), [1, 0], [_node(time_minutes=60.0)])
    assert [p.split(" ", 1)[0] for p in problems] == ["cpus", "mem", "gpus", "time"]
    assert "at most 2 CPUs" in problems[0] and "no GPU" in problems[2] and "60 minutes" in problems[3]
    other = resource_problems(SlurmConfig(partition="gpu", cpus=1, mem="1G", gpus=0), [0], [_node()])
    assert other == ["partition gpu has no nodes (sinfo -p gpu lists none)"]


@needs_bash
def test_submit_refuses_defaults_the_cluster_cannot_satisfy(cli, tmp_path: Path) -> None:
    """Item 4 through the CLI: with sinfo showing 2-CPU nodes without GPUs, the defaults (cpus 8,
    gpus 1) are refused before anything is submitted; a script is still written, with warnings."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",), n_patients=10, folds=2)
    env, calls = install_fake_sbatch(tmp_path)
    _fake_tool(tmp_path / "bin", "sinfo", "echo 'debug*|2|24000|(null)|infinite'\n")
    refused = cli("-p", root, "slurm", "train-source", "--submit", env=env)
    assert refused.exit_code == 1
    assert "cpus 8 per task" in refused.output and "gpus 1 per task" in refused.output
    assert list(calls.iterdir()) == []
    fitting = cli(
        "-p", root, "slurm", "train-source", "--submit", "--cpus", "2", "--gpus", "0", "--mem", "8G", env=env
    )
    assert fitting.exit_code == 0, fitting.output
    written = cli("-p", root, "slurm", "train-source", "-o", tmp_path / "t.sbatch", env=env)
    assert written.exit_code == 0 and "does not fit the cluster: cpus 8" in written.stderr


def test_job_script_appends_to_the_log_and_requeues(tmp_path: Path) -> None:
    """Item 5: a requeued task appends to its log (was: truncated, the first attempt lost)."""
    text = render_job_script(_two_jobs()[0], ProjectLayout(tmp_path / "p"), SlurmConfig())
    assert "#SBATCH --open-mode=append" in text.splitlines()
    assert "#SBATCH --requeue" in text.splitlines()


def test_task_failing_on_a_corrupt_feature_file_exits_2(cli, tmp_path: Path) -> None:
    """Item 6: an array task whose unit cannot read its features fails the unit: exit 2 (was 1),
    the one rule of docs/hpc.md; a wrong request (index out of range) is still exit 1."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",), n_patients=10, folds=2)
    layout, config = load_project(root)
    first = sorted(layout.features_dir(config.encoder).glob("*.h5"))[0]
    first.write_bytes(first.read_bytes()[:100])
    result = cli("-p", root, "train-source", "--task-index", "0", "--json")
    assert result.exit_code == 2, result.output
    (item,) = json.loads(result.stdout)["items"]
    assert item["status"] == "failed" and str(first) in item["message"] and "hint:" in item["message"]
    assert cli("-p", root, "train-source", "--task-index", "7").exit_code == 1


def test_task_waits_for_a_live_worker_and_verifies_the_record(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 7: a task whose unit a live process holds waits for it, then finds the unit done by it
    (skipped, exit 0: an afterok dependant runs; was: `locked`, exit 2)."""
    import steph.stages.base as base

    root = make_feature_project(tmp_path / "p", cancers=("BRCA",), n_patients=10, folds=2)
    twin = make_feature_project(tmp_path / "twin", cancers=("BRCA",), n_patients=10, folds=2)
    assert cli("-p", twin, "train-source", "--task-index", "0").exit_code == 0
    set_config(root, {"slurm.lock_wait_minutes": 5})
    layout, _ = load_project(root)
    waiting = threading.Event()
    original = base.wait_for_holders

    def signalling(unit, limit_s, **kw):
        waiting.set()
        return original(unit, limit_s, **kw)

    monkeypatch.setattr(base, "wait_for_holders", signalling)

    def other_worker() -> None:  # holds the unit, finishes it once the task waits, releases it
        with hold(layout.model_weights("BRCA", 0), what="the other worker"):
            held.set()
            assert waiting.wait(timeout=300)
            shutil.copytree(
                twin / "models" / "BRCA" / "fold_0", layout.model_dir("BRCA", 0), dirs_exist_ok=True
            )

    held = threading.Event()
    worker = threading.Thread(target=other_worker)
    worker.start()
    assert held.wait(timeout=60)
    result = cli("-p", root, "train-source", "--task-index", "0", "--json")
    worker.join(timeout=60)
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)["items"]
    assert item["status"] == "skipped" and item["message"].startswith("done by another process")


def test_task_reports_locked_when_the_wait_runs_out(cli, tmp_path: Path) -> None:
    """Item 7, the bound: a holder that never finishes leaves the unit locked (exit 2) after
    slurm.lock_wait_minutes; a holder that gives up unfinished is replaced (the task runs it)."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",), n_patients=10, folds=2)
    set_config(root, {"slurm.lock_wait_minutes": 0.02})
    layout, _ = load_project(root)
    with hold(layout.model_weights("BRCA", 0), what="test"):  # this (live) process holds it
        held = cli("-p", root, "train-source", "--task-index", "0", "--json")
    assert held.exit_code == 2 and json.loads(held.stdout)["items"][0]["status"] == "locked"
    assert cli("-p", root, "train-source", "--task-index", "0").exit_code == 0


@needs_bash
def test_several_units_per_array_task(cli, tmp_path: Path) -> None:
    """Item 9: `--units-per-task N` sizes the array (ceil(units / N) tasks) and each task runs
    its units in one process (`--task-index FIRST-LAST`), skipping those done."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA", "BLCA"), n_patients=10, folds=3)
    script = tmp_path / "train.sbatch"
    written = cli("-p", root, "slurm", "train-source", "--units-per-task", "4", "-o", script, "--gpus", "0")
    assert written.exit_code == 0, written.output
    text = script.read_text()
    assert "#SBATCH --array=0-1" in text.splitlines()  # 6 units, 4 per task
    assert subprocess.run([BASH, "-n", str(script)]).returncode == 0
    commands = []
    for task in ("0", "1"):  # what each array task runs
        environment = {**os.environ, "SLURM_ARRAY_TASK_ID": task}
        shown = subprocess.run(
            [
                BASH,
                "-c",
                text.replace("\n" + str(Path(os.sys.executable)), "\necho " + str(os.sys.executable)),
            ],
            env=environment,
            capture_output=True,
            text=True,
        )
        commands.append(shown.stdout.strip().rsplit(" ", 1)[-1])
    assert commands == ["0-3", "4-5"]

    result = cli("-p", root, "train-source", "--task-index", "0-3", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(i["key"], i["status"]) for i in report["items"]] == [
        ("BRCA/fold_0", "done"),
        ("BRCA/fold_1", "done"),
        ("BRCA/fold_2", "done"),
        ("BLCA/fold_0", "done"),
    ]
    assert report["outputs"]["tasks"]["indices"] == [0, 1, 2, 3]
    again = json.loads(cli("-p", root, "train-source", "--task-index", "3-5", "--json").stdout)
    assert [i["status"] for i in again["items"]] == ["skipped", "done", "done"]
    # the pending array keeps only the groups with an undone unit
    layout, _ = load_project(root)
    shutil.rmtree(layout.model_dir("BLCA", 2))
    pending = cli("-p", root, "slurm", "train-source", "--units-per-task", "4", "--pending", "--gpus", "0")
    assert "#SBATCH --array=1" in pending.stdout.splitlines()
