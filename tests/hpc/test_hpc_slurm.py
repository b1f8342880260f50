"""Slurm scripts: array ranges, quoting, bash syntax, submission through a fake sbatch."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from _hpc import install_fake_sbatch, recorded
from hypothesis import given
from hypothesis import strategies as st

from steph.config import SlurmConfig
from steph.errors import ConfigError
from steph.hpc.slurm import (
    ArrayJob,
    SubmitError,
    array_spec,
    render_job_script,
    render_submit_script,
    submit_jobs,
)
from steph.layout import ProjectLayout

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")


def _expand(spec: str) -> list[int]:
    """Slurm's reading of an --array value (without the %K suffix)."""
    out: list[int] = []
    for part in spec.split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


@given(st.sets(st.integers(0, 300), min_size=1))
def test_array_spec_round_trips(indices: set[int]) -> None:
    assert _expand(array_spec(sorted(indices))) == sorted(indices)


def test_array_spec_examples() -> None:
    assert array_spec(range(10), 4) == "0-9%4"
    assert array_spec([7]) == "7"
    assert array_spec([0, 2, 3, 4, 8]) == "0,2-4,8"
    with pytest.raises(ConfigError):
        array_spec([])


def _bash_n(text: str, tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text(text)
    done = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_job_script_has_resources_and_passes_bash_n(tmp_path: Path) -> None:
    layout = ProjectLayout(tmp_path / "proj")
    config = SlurmConfig(
        partition="gpu", account="lab", time="12:00:00", mem="64G", cpus=4, gpus=2, max_parallel=3
    )
    job = ArrayJob("train-source", tuple(range(65)), ("--cancer", "BRCA"), gpus=2, n_tasks=65)
    text = render_job_script(job, layout, config)
    _bash_n(text, tmp_path)
    lines = text.splitlines()
    for expected in (
        "#SBATCH --array=0-64%3",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --time=12:00:00",
        "#SBATCH --mem=64G",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --gres=gpu:2",
        f"#SBATCH --output={layout.logs_dir}/slurm/train-source-%A_%a.log",
    ):
        assert expected in lines
    assert lines[-1].endswith('--cancer BRCA --task-index "$SLURM_ARRAY_TASK_ID"')


def test_cpu_stage_asks_for_no_gpu(tmp_path: Path) -> None:
    text = render_job_script(ArrayJob("evaluate", (0,), gpus=0), ProjectLayout(tmp_path), SlurmConfig())
    assert "--gres" not in text


def test_paths_and_values_are_quoted(tmp_path: Path) -> None:
    """A project path with spaces and quotes reaches stephctl intact; #SBATCH values are quoted."""
    root = tmp_path / "my project's $HOME dir"
    layout = ProjectLayout(root)
    # The activation line defines `stephctl` as a function that prints its arguments.
    config = SlurmConfig(activate="stephctl() { printf '%s\\n' \"$@\"; }", partition="a b")
    job = ArrayJob("merge", (0, 1), ("--target", "BRCA", "--option", "note=it's; rm -rf ~"))
    text = render_job_script(job, layout, config)
    assert "#SBATCH --partition='a b'" in text.splitlines()
    output = next(line for line in text.splitlines() if line.startswith("#SBATCH --output="))
    assert shlex.split(output.split("=", 1)[1]) == [str(layout.slurm_log("merge"))]
    script = tmp_path / "job.sh"
    script.write_text(text)
    done = subprocess.run(
        [BASH, str(script)], capture_output=True, text=True, env={"SLURM_ARRAY_TASK_ID": "1"}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "-p",
        str(root),
        "merge",
        "--target",
        "BRCA",
        "--option",
        "note=it's; rm -rf ~",
        "--task-index",
        "1",
    ]


@pytest.mark.parametrize(
    "bad", [SlurmConfig(time="1:00\\n"), SlurmConfig(partition="a\nb"), SlurmConfig(activate="a\nb")]
)
def test_unwritable_values_are_refused(tmp_path: Path, bad: SlurmConfig) -> None:
    with pytest.raises(ConfigError):
        render_job_script(ArrayJob("evaluate", (0,)), ProjectLayout(tmp_path), bad)


def _jobs() -> list[ArrayJob]:
    return [
        ArrayJob("train-source", tuple(range(6)), gpus=1, n_tasks=6),
        ArrayJob("task-vector", tuple(range(6)), n_tasks=6),
        ArrayJob("merge", (0, 2, 3), ("--target", "BRCA"), gpus=1, n_tasks=4),
    ]


def test_submit_script_chains_jobs_with_afterok(tmp_path: Path) -> None:
    layout = ProjectLayout(tmp_path / "proj")
    text = render_submit_script(_jobs(), layout, SlurmConfig(), after="77")
    _bash_n(text, tmp_path)
    env, calls = install_fake_sbatch(tmp_path)
    script = tmp_path / "submit.sh"
    script.write_text(text)
    done = subprocess.run([BASH, str(script)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["train-source: job 123", "task-vector: job 124", "merge: job 125"]
    calls_made = recorded(calls)
    assert [args for args, _ in calls_made] == [
        ["--dependency=afterok:77"],
        ["--dependency=afterok:123"],
        ["--dependency=afterok:124"],
    ]
    arrays = [next(line for line in body.splitlines() if "--array=" in line) for _, body in calls_made]
    assert arrays == ["#SBATCH --array=0-5", "#SBATCH --array=0-5", "#SBATCH --array=0,2-3"]
    assert calls_made[2][1].rstrip().endswith('--target BRCA --task-index "$SLURM_ARRAY_TASK_ID"')


def test_submit_jobs_calls_sbatch_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = ProjectLayout(tmp_path / "proj")
    env, calls = install_fake_sbatch(tmp_path)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("FAKE_SBATCH_LOG", env["FAKE_SBATCH_LOG"])
    ids = submit_jobs(_jobs()[:2], layout, SlurmConfig(max_parallel=2))
    assert ids == ["123", "124"]
    (first_args, first), (second_args, _) = recorded(calls)
    assert first_args == [] and second_args == ["--dependency=afterok:123"]
    assert "#SBATCH --array=0-5%2" in first.splitlines()
    saved = sorted((layout.logs_dir / "slurm").glob("*.sbatch"))
    assert [p.name.split("-20")[0] for p in saved] == ["task-vector", "train-source"]


def test_submit_errors_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = ProjectLayout(tmp_path / "proj")
    with pytest.raises(SubmitError, match="not found"):
        submit_jobs(_jobs()[:1], layout, SlurmConfig(), sbatch=str(tmp_path / "no-sbatch"))
    failing = tmp_path / "failing-sbatch"
    failing.write_text("#!/bin/bash\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(SubmitError, match="invalid partition"):
        submit_jobs(_jobs()[:1], layout, replace(SlurmConfig(), partition="nope"), sbatch=str(failing))


@pytest.mark.parametrize(
    "module", ["steph.hpc.slurm", "steph.pipeline.shards", "steph.pipeline.extract_devices"]
)
def test_doctests(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_after_must_be_job_ids(tmp_path: Path) -> None:
    layout = ProjectLayout(tmp_path / "proj")
    assert "afterok:12:13" in render_submit_script(_jobs()[:1], layout, SlurmConfig(), after="12:13")
    for bad in ("12; rm -rf ~", "abc", ""):
        with pytest.raises(ConfigError, match="--after"):
            render_submit_script(_jobs()[:1], layout, SlurmConfig(), after=bad)
        with pytest.raises(ConfigError, match="--after"):
            submit_jobs(_jobs()[:1], layout, SlurmConfig(), after=bad)
