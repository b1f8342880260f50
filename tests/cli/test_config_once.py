"""Issue 26 item 5: a command reads the project's settings file once (`stephctl slurm` read it
once per stage plus once for itself; `predict` loaded it its own way)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _cohorts import make_feature_project

import steph.config

CONFIG = "stephctl.yaml"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_feature_project(tmp_path_factory.mktemp("once") / "p", n_patients=10, folds=3)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every settings file parsed (the config loader's one YAML read)."""
    seen: list[str] = []
    parse = steph.config.load_yaml

    def counted(text: str, source: str) -> object:
        seen.append(source)
        return parse(text, source)

    monkeypatch.setattr(steph.config, "load_yaml", counted)
    yield seen


def test_slurm_reads_the_settings_once_for_every_stage(cli, project: Path, reads: list[str]) -> None:
    result = cli(
        "-p",
        project,
        "slurm",
        "train-source",
        "task-vector",
        "merge",
        "--stage-options",
        "train-source=--epochs 2",
        "--stage-options",
        "merge=--target BRCA --method model-avg",
    )
    assert result.exit_code == 0, result.output
    assert "train-source" in result.stdout and "merge" in result.stdout
    assert [Path(r).name for r in reads] == [CONFIG]


def test_predict_reads_the_settings_once_through_the_common_route(
    cli, project: Path, reads: list[str], tmp_path: Path
) -> None:
    other = tmp_path / "other.yaml"
    other.write_text((project / CONFIG).read_text())
    manifest = tmp_path / "new.csv"
    manifest.write_text("slide_id,patient_id,path\n")
    result = cli(
        "-p",
        project,
        "--config",
        other,
        "predict",
        "--manifest",
        manifest,
        "-t",
        "BRCA",
        "-m",
        "steph",
        "-k",
        "0",
    )
    assert result.exit_code != 0  # no model yet: what matters is how the settings were read
    assert reads == [str(other)]  # --config is honoured, and read once
