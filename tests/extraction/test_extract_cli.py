"""`stephctl extract` through the CLI: flags, JSON, exit codes, encoder listing, light imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _slides import TEST_EXTRACT_CONFIG, row, write_blank_slide, write_manifest, write_slide

from steph.config import load_config
from steph.extraction import read_attrs
from steph.layout import ProjectLayout


@pytest.fixture
def extract_project(empty_project: Path) -> Path:
    """A project with one good and one blank slide, configured for tiny test patches."""
    write_slide(empty_project / "slides" / "good.tif", 0.5)
    write_blank_slide(empty_project / "slides" / "blank.tif")
    write_manifest(empty_project, [row("good", "slides/good.tif"), row("blank", "slides/blank.tif")])
    text = (empty_project / "stephctl.yaml").read_text()
    for key, value in TEST_EXTRACT_CONFIG.items():
        leaf = key.rsplit(".", 1)[1]
        if leaf in ("device", "batch_size", "workers"):
            continue  # given as flags below
        text = _set_yaml(text, leaf, value)
    (empty_project / "stephctl.yaml").write_text(text)
    config = load_config(empty_project)
    assert config.extract.patch_size == 64 and config.extract.tissue.thumbnail_mpp == 2.0
    return empty_project


def _set_yaml(text: str, leaf: str, value: object) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(f"{leaf}:"):
            indent = line[: len(line) - len(line.lstrip())]
            lines[i] = f"{indent}{leaf}: {value}"
            return "\n".join(lines) + "\n"
    raise AssertionError(f"{leaf} not in the template")


def test_extract_json_exit_code_and_failure_table(cli, extract_project: Path) -> None:
    args = ("-p", extract_project, "extract", "--device", "cpu", "--workers", "1", "--batch-size", "8")
    result = cli(*args, "--json")
    assert result.exit_code == 2  # one slide failed
    report = json.loads(result.stdout)
    assert report["counts"] == {"done": 1, "skipped": 0, "failed": 1, "locked": 0}
    failed = [i for i in report["items"] if i["status"] == "failed"]
    assert failed[0]["key"] == "blank" and "no tissue" in failed[0]["message"]
    again = cli(*args, "--cancer", "BRCA")
    assert again.exit_code == 2
    assert "1 skipped" in again.stdout and "blank" in again.stdout and "no tissue" in again.stdout
    ids = extract_project / "good.txt"
    ids.write_text("good\n")
    assert cli(*args, "--slides", ids).exit_code == 0


def test_weights_flag_and_mpp_flag(cli, extract_project: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from steph.extractors.tiny_cnn import TinyCNN

    weights = tmp_path / "tiny-seed3.safetensors"
    save_file(TinyCNN(seed=3).state_dict(), str(weights))
    write_slide(extract_project / "slides" / "nompp.tif", None, render_mpp=0.5)
    write_manifest(extract_project, [row("nompp", "slides/nompp.tif")])
    result = cli(
        "-p", extract_project, "extract", "--weights", weights, "--mpp", "0.5", "--device", "cpu", "--json"
    )
    assert result.exit_code == 0, result.output
    attrs = read_attrs(ProjectLayout(extract_project).own_features("tiny-cnn", "nompp"))
    assert attrs["encoder_weights"].startswith("sha256:") and attrs["mpp_source"] == "config"
    saved = (ProjectLayout(extract_project).extract_config("tiny-cnn")).read_text()
    assert str(weights) in saved  # the resolved config records the weights file


def test_user_errors_exit_1_with_hint(cli, extract_project: Path) -> None:
    result = cli("-p", extract_project, "extract", "--encoder", "uni2h")
    assert result.exit_code == 1
    assert "unknown encoder 'uni2h'" in result.stderr and "tiny-cnn" in result.stderr
    result = cli("-p", extract_project, "extract", "--encoder", "uni2-h", "--device", "cpu")
    assert result.exit_code == 1
    assert "--weights FILE" in result.stderr and "pytorch_model.bin" in result.stderr
    result = cli("-p", extract_project, "extract", "--num-shards", "2", "--shard-index", "2")
    assert result.exit_code == 1 and "outside [0, 2)" in result.stderr


def test_list_encoders_table_and_json(cli) -> None:
    table = cli("extract", "--list-encoders")
    assert table.exit_code == 0 and "uni2-h" in table.stdout and "tiny-cnn" in table.stdout
    rows = json.loads(cli("extract", "--list-encoders", "--json").stdout)
    assert {r["name"] for r in rows} >= {
        "tiny-cnn",
        "uni2-h",
        "uni",
        "h-optimus-0",
        "virchow2",
        "prov-gigapath",
        "timm:<model>",
    }


def test_command_module_imports_nothing_heavy() -> None:
    code = "import sys, stephctl.commands.extract; print(sorted(m for m in ('torch', 'timm', 'openslide', 'h5py') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_slurm_task_id_picks_a_shard_of_the_task_list(cli, extract_project: Path) -> None:
    """Issue 26: extract read its shard as (ID - MIN) / STEP from the Slurm variables while every
    other stage uses the raw task id as an index of its task list; `--num-shards 2` alone in an
    array task failed with "--num-shards and --shard-index go together"."""
    args = ("-p", extract_project, "extract", "--device", "cpu", "--workers", "1", "--batch-size", "8")
    listed = cli(*args, "--num-shards", "2", "--list-tasks").stdout.splitlines()
    assert listed == ["0\tshard_0_of_2\tpending", "1\tshard_1_of_2\tpending"]
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    result = cli(*args, "--num-shards", "2", "--json", env=env)
    assert result.exit_code == 0, result.output  # shard 1 of the sorted ids (blank, good) is "good"
    report = json.loads(result.stdout)
    assert [(i["key"], i["status"]) for i in report["items"]] == [("good", "done")]
    assert report["outputs"]["task"] == {"index": 1, "key": "shard_1_of_2", "of": 2}
