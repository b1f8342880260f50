"""Issue 19, point 7: the JSON error document under --json, --config FILE, shell completion,
flags without a ``<bool>`` metavar, and ``extract --slides`` taking ids or a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
import typer
from _slides import row, write_manifest
from typer.testing import CliRunner

from stephctl import _common
from stephctl.main import StephGroup


def _error(result) -> dict[str, object]:
    """The one JSON document on stdout of a failed command; its error part."""
    document = json.loads(result.stdout)  # exactly one document: json.loads refuses trailing data
    assert document["ok"] is False and set(document) == {"ok", "error"}
    return document["error"]


# -- the JSON error document ----------------------------------------------------------------------
def test_merge_on_a_fresh_project_prints_one_error_document(cli, empty_project: Path) -> None:
    result = cli("-p", empty_project, "merge", "--target", "BRCA", "--json")
    assert result.exit_code == 1
    error = _error(result)
    assert error["type"] == "MissingArtifactError"
    assert "has no cancers yet" in str(error["message"]) and "train-source" in str(error["hint"])
    assert error["exit_code"] == 1 and error["command"] == "stephctl merge"
    assert "error:" in result.stderr and "has no cancers yet" in result.stderr  # stderr unchanged


def test_train_source_with_a_bad_config_prints_one_error_document(cli, empty_project: Path) -> None:
    config = empty_project / "stephctl.yaml"
    config.write_text(config.read_text() + "\ntrain:\n  epochz: 3\n")
    result = cli("-p", empty_project, "train-source", "--json")
    assert result.exit_code == 1
    error = _error(result)
    assert error["type"] == "ConfigError" and "epochz" in str(error["message"])
    assert error["command"] == "stephctl train-source"


def test_usage_errors_and_command_failures_of_other_commands(
    cli, empty_project: Path, tmp_path: Path
) -> None:
    usage = cli("-p", empty_project, "merge", "--target", "BRCA", "--no-such-flag", "--json")
    assert usage.exit_code == 1
    error = _error(usage)
    assert (error["type"], error["message"]) == ("UsageError", "No such option: --no-such-flag")
    assert error["command"] == "stephctl merge"
    not_a_project = cli("-p", tmp_path / "nowhere", "status", "--json")
    assert not_a_project.exit_code == 1
    assert "not a stephctl project" in str(_error(not_a_project)["message"])
    explain = cli("-p", empty_project, "explain", "-t", "BRCA", "-m", "steph", "-k", "0", "--json")
    assert explain.exit_code == 1  # a check of the command itself (fail() without a library error)
    assert _error(explain)["type"] == "UsageError"
    init_twice = cli("init", empty_project, "--json")
    assert init_twice.exit_code == 1 and "already exists" in str(_error(init_twice)["message"])


def test_without_json_stdout_stays_empty_and_after_json_output_no_second_document(
    cli, empty_project: Path
) -> None:
    plain = cli("-p", empty_project, "merge", "--target", "BRCA")
    assert plain.exit_code == 1 and plain.stdout == ""
    after_dashes = cli("slurm", "extract", "--bogus", "--", "--json")  # after `--` it is not ours
    assert after_dashes.exit_code == 1 and after_dashes.stdout == ""
    _common.begin_invocation(["merge", "--json"])
    _common.print_json({"a": 1})
    assert _common._Invocation.json_written
    _common.emit_json_error("X", "y")  # already one document on stdout: nothing more


def test_an_unexpected_error_keeps_its_traceback_and_exit_status() -> None:
    """Any command under the root group, a plugin's too: a bug is re-raised (Python prints the
    traceback and exits 1) after the document; a bare non-zero exit keeps its code."""
    group = typer.Typer(cls=StephGroup)

    @group.command()
    def boom(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
        raise RuntimeError("boom")

    @group.command()
    def leave(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
        raise typer.Exit(3)

    result = CliRunner().invoke(group, ["boom", "--json"])
    assert isinstance(result.exception, RuntimeError)
    error = _error(result)
    assert (error["type"], error["message"], error["exit_code"]) == ("RuntimeError", "boom", 1)
    assert "bug" in str(error["hint"]) and error["command"] is None
    left = CliRunner().invoke(group, ["leave", "--json"])
    assert left.exit_code == 3 and _error(left)["exit_code"] == 3
    assert CliRunner().invoke(group, ["leave"]).stdout == ""


# -- --config FILE --------------------------------------------------------------------------------
def test_config_file_replaces_the_projects_stephctl_yaml(cli, empty_project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "other.yaml"
    elsewhere.write_text("cancers: [LUAD, KIRC]\n")
    default = json.loads(cli("-p", empty_project, "status", "--json").stdout)
    chosen = cli("-p", empty_project, "--config", elsewhere, "status", "--json")
    assert chosen.exit_code == 0, chosen.output
    assert json.dumps(default).count("LUAD") == 0 and "LUAD" in chosen.stdout and "KIRC" in chosen.stdout
    from_env = cli("-p", empty_project, "status", "--json", env={"STEPHCTL_CONFIG": str(elsewhere)})
    assert from_env.stdout == chosen.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    refused = cli("-p", empty_project, "--config", bad, "train-source", "--json")
    assert refused.exit_code == 1 and str(bad) in str(_error(refused)["message"])
    missing = cli("-p", empty_project, "--config", tmp_path / "nope.yaml", "status")
    assert missing.exit_code == 1 and "config file not found" in missing.stderr
    slurm = cli("-p", empty_project, "--config", elsewhere, "slurm", "extract")
    assert slurm.exit_code == 1 and "does not pass --config" in slurm.stderr


# -- completion and help ----------------------------------------------------------------------------
def test_shell_completion_completes_commands_and_options() -> None:
    def complete(words: str, cword: int) -> list[str]:
        env = {
            **os.environ,
            "_STEPHCTL_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(cword),
        }
        code = "import sys; sys.argv[0] = 'stephctl'; from stephctl.main import main; main()"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert complete("stephctl mer", 1) == ["merge"]
    assert "task-vector" in complete("stephctl ta", 1)
    assert "--target" in complete("stephctl merge --ta", 2)


def test_help_shows_completion_and_no_bool_metavar(cli) -> None:
    root = cli("--help", env={"COLUMNS": "160"})
    assert "--install-completion" in root.stdout and "--config" in root.stdout
    for command in ("merge", "extract", "train-source", "plugins", "slurm", "status"):
        text = cli(command, "--help", env={"COLUMNS": "160"}).stdout
        assert "--json" in text or command == "slurm"
        assert "<bool>" not in text, command
    assert "<bool>" not in root.stdout and "<int>" not in root.stdout.split("--verbose")[1].split("\n")[0]


# -- extract --slides -------------------------------------------------------------------------------
@pytest.fixture
def manifest_project(empty_project: Path) -> Path:
    for name in ("s1", "s2", "s3"):
        (empty_project / "slides" / f"{name}.tif").write_bytes(b"")
    write_manifest(empty_project, [row(n, f"slides/{n}.tif") for n in ("s1", "s2", "s3")])
    return empty_project


def _listed(cli, project: Path, *args: object) -> list[str]:
    result = cli("-p", project, "extract", *args, "--num-shards", "1", "--list-tasks", "--json")
    assert result.exit_code == 0, result.output
    (unit,) = json.loads(result.stdout)
    return [Path(p).stem for p in unit["outputs"]]


def test_extract_slides_takes_ids_or_a_file(cli, manifest_project: Path, tmp_path: Path) -> None:
    assert _listed(cli, manifest_project) == ["s1", "s2", "s3"]
    assert _listed(cli, manifest_project, "--slides", "s3,s1") == ["s1", "s3"]
    assert _listed(cli, manifest_project, "--slides", "s2", "--slides", "s3") == ["s2", "s3"]
    assert _listed(cli, manifest_project, "--slides", "s2") == ["s2"]
    listing = tmp_path / "ids"  # no suffix: an existing file is a file
    listing.write_text("s1\n# a comment\ns2\n")
    assert _listed(cli, manifest_project, "--slides", listing) == ["s1", "s2"]
    unknown = cli("-p", manifest_project, "extract", "--slides", "s1,s9", "--list-tasks", "--json")
    assert unknown.exit_code == 1 and "s9" in str(_error(unknown)["message"])
    missing = cli("-p", manifest_project, "extract", "--slides", tmp_path / "nope.txt", "--list-tasks")
    assert missing.exit_code == 1 and "slide list not found" in missing.stderr
    mixed = cli("-p", manifest_project, "extract", "--slides", f"s1,{listing}", "--list-tasks")
    assert mixed.exit_code == 1 and "mixes slide ids and the file" in mixed.stderr


def test_slurm_keeps_the_slide_ids_on_every_tasks_command_line(cli, manifest_project: Path) -> None:
    result = cli("-p", manifest_project, "slurm", "extract", "--", "--slides", "s1,s3", "--num-shards", "2")
    assert result.exit_code == 0, result.output
    command = [line for line in result.stdout.splitlines() if "--task-index" in line][-1]
    assert "--slides s1,s3" in command and "--num-shards 2" in command
