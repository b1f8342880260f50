"""Everything is derived from the registered stages: a stage installed as a plugin (an entry point
in a temporary package) shows in `stephctl status`, `stephctl plugins` and `stephctl slurm` with no
other edit; and a built-in stage is one stage module, one command and one registration line."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

import pytest
from _cohorts import make_feature_project
from _plugins import REPO, install_by_hand, stephctl, write_package

EXTENDING = REPO / "docs" / "extending.md"


def _stage_blocks() -> dict[str, str]:
    """The files of docs/extending.md's stage example (``my_lab_stages/<file>`` -> code)."""
    section = EXTENDING.read_text(encoding="utf-8").split("## 5. A stage", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"```python\n# my_lab_stages/([^\n]+)\n(.*?)```", section, re.S))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stage of docs/extending.md installed as a package of its own (entry points only)."""
    root = tmp_path_factory.mktemp("stage-plugin")
    package = write_package(
        root / "src",
        dist="lab-stages",
        version="0.3.0",
        module="my_lab_stages",
        sources=_stage_blocks(),
        entry_points={
            "stephctl.stages": {"my-lab": "my_lab_stages.bag_sizes:register"},
            "stephctl.commands": {"bag-sizes": "my_lab_stages.command:bag_sizes"},
        },
    )
    install_by_hand(package, root / "site")
    return root / "site"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_feature_project(tmp_path_factory.mktemp("stage-plugin-p") / "p", n_patients=8, folds=2)


def _json(result) -> object:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_a_plugin_stage_shows_in_status_plugins_and_slurm(site: Path, project: Path) -> None:
    status = _json(stephctl("-p", project, "status", "--json", path=[site]))
    rows = {row["stage"]: row for row in status["stages"]}  # type: ignore[index]
    assert list(rows)[-1] == "bag-sizes"  # order 60: after the built-in rows
    assert (rows["bag-sizes"]["done"], rows["bag-sizes"]["total"]) == (0, 2)
    assert rows["bag-sizes"]["groups"] == {"BRCA": [0, 1], "BLCA": [0, 1]}

    listing = _json(stephctl("plugins", "--json", path=[site]))
    stages = {row["name"]: row for row in listing["stages"]}  # type: ignore[index]
    assert [name for name in stages][-1] == "bag-sizes"
    assert (stages["bag-sizes"]["package"], stages["bag-sizes"]["version"]) == ("lab-stages", "0.3.0")
    assert stages["bag-sizes"]["status"] == "ok" and stages["extract"]["package"] == "stephctl"
    assert "bag-sizes" in stephctl("plugins", path=[site]).stdout

    script = stephctl("-p", project, "slurm", "bag-sizes", path=[site])
    assert script.returncode == 0, script.stdout + script.stderr
    assert "#SBATCH --array=0-1" in script.stdout and "bag-sizes" in script.stdout
    assert "bag-sizes" in stephctl("slurm", "--help", path=[site]).stdout

    # one unit run by its task index; status counts it done and names the stage of its lock
    task = stephctl("-p", project, "bag-sizes", "--task-index", "1", "--json", path=[site])
    assert task.returncode == 0, task.stdout + task.stderr
    lock = project / "bag_sizes" / "BRCA.csv.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}))
    status = _json(stephctl("-p", project, "status", "--json", path=[site]))
    row = next(r for r in status["stages"] if r["stage"] == "bag-sizes")  # type: ignore[index]
    assert (row["done"], row["missing"]) == (1, ["BRCA"])
    assert [(Path(x["path"]).name, x["stage"]) for x in status["locks"]] == [("BRCA.csv.lock", "bag-sizes")]  # type: ignore[index]
    lock.unlink()


def test_a_built_in_stage_is_one_module_one_command_and_one_registration_line() -> None:
    """Every stage module of steph/stages is registered with no list to edit; each stage's command
    is one module under stephctl/commands and one entry point in pyproject.toml; and
    docs/extending.md says so."""
    from steph.stages import STAGES, stage_names
    from steph.stages.builtin import stage_modules

    tomllib = pytest.importorskip("tomllib")

    modules = stage_modules()
    assert len(modules) == len(stage_names()) == len(STAGES.names())
    for module in modules:
        source = (REPO / "steph" / "stages" / f"{module}.py").read_text(encoding="utf-8")
        assert re.search(r"^STAGE\b.*= Stage\(", source, re.M), module
    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "entry-points"
    ]
    commands = entry_points["stephctl.commands"]
    assert entry_points["stephctl.stages"] == {"builtin": "steph.stages.builtin:register"}
    for name in stage_names():
        target = commands[name]  # the one registration line
        module = target.split(":")[0]
        assert module == f"stephctl.commands.{name.replace('-', '_')}"
        assert "run_stage_command(" in (REPO / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
    # the builtin register function lists no stage by hand
    builtin = (REPO / "steph" / "stages" / "builtin.py").read_text(encoding="utf-8")
    assert not any(f'"{name}"' in builtin or f"import {module}" in builtin for name in stage_names())
    text = " ".join(EXTENDING.read_text(encoding="utf-8").split())
    for claim in (
        "a new stage touches exactly three files",
        "**one stage module**, `steph/stages/<name>.py`, defining `STAGE`",
        "**one command**, `stephctl/commands/<name>.py`",
        "**one registration line**, the command's entry point",
    ):
        assert claim in text, claim
