"""The CLI surface: help, version, global options, init, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _repo import REPO

STAGES = ["extract", "train-source", "task-vector", "merge", "evaluate", "init", "demo"]


def test_help_lists_every_command(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for name in STAGES:
        assert name in result.output
    assert "BROKEN" not in result.output


def test_version(cli) -> None:
    from steph import __version__

    result = cli("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from stephctl.main import app\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'timm', 'openslide', 'h5py', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"stephctl --help imported {out.stdout.strip()}"


def test_init_creates_layout(cli, tmp_path: Path) -> None:
    target = tmp_path / "p"
    result = cli("init", target, "--cancer", "tcga_brca", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["project"] == str(target.absolute())
    for name in (
        "slides",
        "labels",
        "splits",
        "features",
        "models",
        "task_vectors",
        "merged",
        "results",
        "reports",
    ):
        assert (target / name).is_dir()
    assert (target / "slides" / "manifest.csv").read_text().startswith("slide_id,patient_id,cancer,path,mpp")
    assert "cancers: [BRCA]" in (target / "stephctl.yaml").read_text()


def test_init_twice_is_a_user_error(cli, tmp_path: Path) -> None:
    assert cli("init", tmp_path / "p").exit_code == 0
    result = cli("init", tmp_path / "p")
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert "--force" in result.output
    assert cli("init", tmp_path / "p", "--force").exit_code == 0


def test_usage_error_exits_1(cli) -> None:
    result = cli("init", "--no-such-flag")
    assert result.exit_code == 1


def test_unknown_command_exits_1(cli) -> None:
    assert cli("frobnicate").exit_code == 1


def test_project_from_environment(cli, tmp_path: Path) -> None:
    (tmp_path / "stephctl.yaml").write_text("train:\n  epoch: 1\n")
    result = cli("train-source", env={"STEPHCTL_PROJECT": str(tmp_path)})
    assert result.exit_code == 1
    assert "did you mean 'epochs'" in result.output


@pytest.mark.parametrize(
    "command", [["merge", "--target", "BRCA"], ["train-source"], ["task-vector"], ["evaluate"]]
)
def test_stage_in_empty_project_is_a_user_error(cli, empty_project: Path, command: list[str]) -> None:
    result = cli("-p", empty_project, *command)
    assert result.exit_code == 1, result.output
    assert "error:" in result.output
    assert "stephctl" in result.output  # the hint names the command that makes what is missing


def test_not_a_project(cli, tmp_path: Path) -> None:
    result = cli("-p", tmp_path, "merge", "--target", "BRCA")
    assert result.exit_code == 1
    assert "stephctl init" in result.output


def test_cli_docs_are_current() -> None:
    from stephctl._docs import update_markdown

    docs = REPO / "docs" / "cli.md"
    text = docs.read_text()
    assert update_markdown(text) == text, "run: python -m stephctl._docs docs/cli.md"
