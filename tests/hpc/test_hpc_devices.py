"""Extract as task list (shards) and on several devices of one node (CPU workers here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _hpc import set_config
from _slides import TEST_EXTRACT_CONFIG, row, write_manifest, write_slide

from steph.config import load_project
from steph.errors import ConfigError
from steph.extraction.h5format import is_complete
from steph.pipeline.extract_devices import deal, parse_devices

IDS = [f"S{i}" for i in range(6)]


@pytest.fixture(scope="module")
def slides_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("slides")
    for sid in IDS:
        write_slide(folder / f"{sid}.tif", 0.5, seed=int(sid[1:]))
    return folder


@pytest.fixture
def project(empty_project: Path, slides_root: Path) -> Path:
    write_manifest(empty_project, [row(sid, slides_root / f"{sid}.tif") for sid in IDS])
    set_config(empty_project, TEST_EXTRACT_CONFIG)
    return empty_project


def test_parse_devices_and_deal() -> None:
    assert parse_devices("0,1") == ["cuda:0", "cuda:1"]
    assert parse_devices(["cpu", "CPU", "cuda"]) == ["cpu", "cpu", "cuda"]
    for bad in ("", "gpu0", "0,,1", "cuda:x"):
        with pytest.raises(ConfigError):
            parse_devices(bad)
    shares = deal(IDS, 4)
    assert sorted(sid for share in shares for sid in share) == sorted(IDS)
    assert [len(s) for s in shares] == [2, 2, 1, 1]


def test_extract_task_runs_exactly_its_shard(project: Path, cli) -> None:
    layout, config = load_project(project)
    listed = cli("-p", project, "extract", "--num-shards", "3", "--list-tasks")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines() == [f"{i}\tshard_{i}_of_3\tpending" for i in range(3)]
    result = cli("-p", project, "extract", "--num-shards", "3", "--task-index", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sorted(i["key"] for i in report["items"] if i["status"] == "done") == [
        "S1",
        "S4",
    ]  # positions 1, 4
    written = sorted(p.stem for p in layout.features_dir(config.encoder).glob("*.h5"))
    assert written == ["S1", "S4"]
    again = cli("-p", project, "extract", "--num-shards", "3", "--list-tasks")
    assert again.stdout.splitlines()[1] == "1\tshard_1_of_3\tdone"
    clash = cli("-p", project, "extract", "--task-index", "0", "--shard-index", "0", "--num-shards", "3")
    assert clash.exit_code == 1


@pytest.mark.slow
def test_two_cpu_workers_split_the_slides(project: Path, cli) -> None:
    layout, config = load_project(project)
    result = cli("-p", project, "extract", "--devices", "cpu,cpu", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    done = {item["key"]: item["details"]["device"] for item in report["items"] if item["status"] == "done"}
    assert sorted(done) == IDS
    assert sorted(set(done.values())) == ["cpu#0", "cpu#1"]
    assert report["outputs"]["devices"] == ["cpu#0", "cpu#1"]
    for sid in IDS:
        assert is_complete(layout.own_features(config.encoder, sid))
    rerun = json.loads(cli("-p", project, "extract", "--devices", "cpu,cpu", "--json").stdout)
    assert {item["status"] for item in rerun["items"]} == {"skipped"}


def test_slurm_extract_pins_shards_and_counts_devices(project: Path, cli) -> None:
    result = cli("-p", project, "slurm", "extract", "--", "--devices", "0,1", "--num-shards", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "#SBATCH --array=0-1" in lines and "#SBATCH --gres=gpu:2" in lines
    assert lines[-1].endswith('extract --devices 0,1 --num-shards 2 --task-index "$SLURM_ARRAY_TASK_ID"')
    default = cli("-p", project, "slurm", "extract").stdout.splitlines()
    assert "#SBATCH --array=0" in default  # 6 slides, 100 per task: one shard
    assert default[-1].endswith('extract --num-shards 1 --task-index "$SLURM_ARRAY_TASK_ID"')
