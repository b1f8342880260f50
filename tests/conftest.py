"""Shared fixtures. Tests make all their data themselves (tiny slides, random models, synthetic cohorts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("STEPHCTL_NO_HUB", "1")


@pytest.fixture
def empty_project(tmp_path: Path) -> Path:
    """A freshly initialised project directory (``stephctl init``)."""
    from steph.project import init_project

    return init_project(tmp_path / "project").root


@pytest.fixture
def cli():
    """Invoke the stephctl CLI in-process: ``cli("-p", dir, "merge", "--target", "BRCA")``."""
    from typer.testing import CliRunner

    from stephctl.main import app

    runner = CliRunner()

    def invoke(*args: object, env: dict[str, str] | None = None):
        return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)

    return invoke


@pytest.fixture(autouse=True)
def _no_slurm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run the same inside a Slurm array job: stages must not pick up its task id."""
    for name in (
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_MAX",
        "SLURM_CONF",  # a developer's cluster: `stephctl slurm` would check resources against it
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real single-node Slurm for the ``slurm``-marked tests, started once per session by
    ``.ci/slurm-cluster.sh`` (stopped at the end); yields the environment that reaches it
    (``SLURM_CONF``). A cluster already reachable through ``$SLURM_CONF`` is used as it is. Skips
    with the reason in one line where none can be started (no packages, not root)."""
    from _slurm import start_cluster

    env, stop = start_cluster(tmp_path_factory.mktemp("slurm-cluster"))
    try:
        yield env
    finally:
        stop()
