"""`--list-tasks`, `--task-index` and `stephctl slurm` through the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from _cohorts import make_feature_project
from _hpc import install_fake_sbatch, recorded

from steph.config import load_project

BASH = shutil.which("bash")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_feature_project(tmp_path_factory.mktemp("cli") / "p", n_patients=10, folds=3)


def test_list_tasks_prints_one_line_per_unit(project: Path, cli) -> None:
    layout, _ = load_project(project)
    result = cli("-p", project, "train-source", "--list-tasks")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    n_units = sum(len(layout.split_folds(c)) for c in ("BRCA", "BLCA"))
    assert len(lines) == n_units == 6
    assert lines[0] == "0\tBRCA/fold_0\tpending"
    as_json = json.loads(
        cli("-p", project, "task-vector", "--cancer", "BLCA", "--list-tasks", "--json").stdout
    )
    assert [(t["index"], t["key"], t["done"]) for t in as_json] == [
        (i, f"BLCA/fold_{i}", False) for i in range(3)
    ]
    merge = cli("-p", project, "merge", "--target", "BRCA", "--method", "model-avg", "--list-tasks")
    assert merge.stdout.splitlines() == [f"{k}\tBRCA/model-avg/fold_{k}\tpending" for k in range(3)]
    evaluate = cli("-p", project, "evaluate", "--list-tasks")
    assert evaluate.stdout.splitlines() == ["0\tBRCA\tpending", "1\tBLCA\tpending"]


def test_task_index_from_slurm_variable(project: Path, cli) -> None:
    layout, _ = load_project(project)
    result = cli("-p", project, "train-source", "--json", env={"SLURM_ARRAY_TASK_ID": "5"})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(i["key"], i["status"]) for i in report["items"]] == [("BLCA/fold_2", "done")]
    assert layout.model_meta("BLCA", 2).is_file() and not layout.model_dir("BRCA", 0).exists()
    listed = cli("-p", project, "train-source", "--list-tasks").stdout.splitlines()
    assert listed[5] == "5\tBLCA/fold_2\tdone"
    bad = cli("-p", project, "train-source", "--task-index", "6")
    assert bad.exit_code == 1 and "out of range" in bad.output


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_slurm_script_for_one_stage(project: Path, cli, tmp_path: Path) -> None:
    out = tmp_path / "train.sbatch"
    result = cli(
        "-p", project, "slurm", "train-source", "-o", out, "--max-parallel", "2", "--", "--cancer", "BRCA"
    )
    assert result.exit_code == 0, result.output
    assert f"sbatch {out}" in result.output
    text = out.read_text()
    assert subprocess.run([BASH, "-n", str(out)]).returncode == 0
    assert "#SBATCH --array=0-2%2" in text.splitlines()
    assert text.rstrip().endswith('train-source --cancer BRCA --task-index "$SLURM_ARRAY_TASK_ID"')
    assert (project / "logs" / "slurm").is_dir()
    printed = cli("-p", project, "slurm", "task-vector")  # a CPU stage
    assert "#SBATCH --array=0-5" in printed.stdout.splitlines() and "--gres" not in printed.stdout


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_slurm_chain_submitted_with_fake_sbatch(project: Path, cli, tmp_path: Path) -> None:
    env, calls = install_fake_sbatch(tmp_path)
    result = cli(
        "-p", project, "slurm", "train-source", "task-vector", "--submit", "--json", "--after", "99", env=env
    )
    assert result.exit_code == 0, result.output
    jobs = json.loads(result.stdout)["jobs"]
    assert [(j["stage"], j["tasks"], j["array"], j["job_id"]) for j in jobs] == [
        ("train-source", 6, "0-5", "123"),
        ("task-vector", 6, "0-5", "124"),
    ]
    (args0, script0), (args1, script1) = recorded(calls)
    assert args0 == ["--dependency=afterok:99"] and args1 == ["--dependency=afterok:123"]
    assert "#SBATCH --array=0-5" in script0.splitlines() and "#SBATCH --array=0-5" in script1.splitlines()
    # --pending leaves out what is done (BLCA/fold_2 was trained above: index 5)
    script = tmp_path / "submit.sh"
    result = cli(
        "-p", project, "slurm", "train-source", "merge", "--pending", "-o", script, "--", "--target", "BRCA"
    )
    assert result.exit_code != 0  # train-source has no --target: the stage rejects the option
    result = cli("-p", project, "slurm", "train-source", "task-vector", "--pending", "-o", script)
    assert result.exit_code == 0, result.output
    assert f"bash {script}" in result.output
    done = subprocess.run([BASH, str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["train-source: job 125", "task-vector: job 126"]
    (_, first), (args, _) = recorded(calls)[2:]
    assert "#SBATCH --array=0-4" in first.splitlines() and args == ["--dependency=afterok:125"]


def test_slurm_usage_errors(project: Path, cli) -> None:
    assert cli("-p", project, "slurm").exit_code == 1
    wrong = cli("-p", project, "slurm", "training")
    assert wrong.exit_code == 1 and "no stage given" in wrong.output
    twice = cli("-p", project, "slurm", "merge", "merge", "--", "--target", "BRCA")
    assert twice.exit_code == 1
