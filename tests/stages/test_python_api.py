"""docs/python-api.md: its example runs as written, on the small synthetic project it generates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _repo import REPO

from steph.stages import (
    EvaluateSelection,
    MergeSelection,
    TaskVectorSelection,
    TrainSourceSelection,
    get_stage,
    open_project,
    plan,
    stage_names,
    stage_of,
)

DOC = REPO / "docs" / "python-api.md"


def _example() -> str:
    section = DOC.read_text(encoding="utf-8").split("## Example", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(_example(), str(DOC), "exec"), namespace)
    project = namespace["project"]
    assert project.cancers == ["BRCA", "BLCA", "LUAD"]
    assert [u.key for u in namespace["units"]] == ["BRCA/fold_0", "BLCA/fold_0", "LUAD/fold_0"]
    assert all(u.done for u in plan(project, TrainSourceSelection()))
    assert all(u.done for u in plan(project, TaskVectorSelection()))
    assert [i.key for i in namespace["merged"].items] == ["BRCA/task-arithmetic/fold_0"]
    assert (tmp_path / "notebook-project" / "results" / "summary.csv").is_file()
    assert namespace["evaluation"].summary is not None


def test_selections_name_their_stage() -> None:
    assert stage_names() == ["extract", "train-source", "task-vector", "merge", "evaluate", "transfer"]
    for selection in (TrainSourceSelection(), TaskVectorSelection(), MergeSelection(), EvaluateSelection()):
        stage = stage_of(selection)
        assert stage.selection is type(selection) and get_stage(stage.name) is stage
    with pytest.raises(TypeError):
        stage_of(object())


def test_project_resolves_defaults_once(tmp_path: Path) -> None:
    from _cohorts import make_feature_project

    root = make_feature_project(tmp_path / "p", cancers=("BRCA", "BLCA"), n_patients=12, folds=3)
    project = open_project(root, {"train.folds": [1, 2], "merge.epochs": 5})
    assert project.cancers == ["BRCA", "BLCA"]
    assert project.folds("brca") == [1, 2] and project.merge_folds("BRCA") == [1, 2]
    assert project.train_epochs == 2 and project.merge_epochs == 5
    assert [u.key for u in plan(project, MergeSelection(target="BRCA", methods=["model-avg"]))] == [
        "BRCA/model-avg/fold_1",
        "BRCA/model-avg/fold_2",
    ]


EXTENDING = REPO / "docs" / "extending.md"


def _stage_blocks() -> dict[str, str]:
    section = EXTENDING.read_text(encoding="utf-8").split("## 5. A stage", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"```python\n# (my_lab_stages/[^\n]+)\n(.*?)```", section, re.S))


def test_extending_stage_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage of docs/extending.md registers, plans, runs (API and CLI) and skips when done."""
    import sys

    import typer
    from _cohorts import make_feature_project
    from typer.testing import CliRunner

    from steph.stages import STAGES, run

    blocks = _stage_blocks()
    assert sorted(blocks) == ["my_lab_stages/bag_sizes.py", "my_lab_stages/command.py"]
    for name, code in blocks.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code, encoding="utf-8")
    (tmp_path / "pkg" / "my_lab_stages" / "__init__.py").write_text("", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    from my_lab_stages import bag_sizes, command  # type: ignore[import-not-found]

    bag_sizes.register(STAGES)
    try:
        assert (
            stage_names()[-1] == "bag-sizes" and stage_of(bag_sizes.BagSizesSelection()).name == "bag-sizes"
        )
        root = make_feature_project(tmp_path / "p", cancers=("BRCA", "BLCA"), n_patients=8, folds=2)
        project = open_project(root)
        assert [u.key for u in plan(project, bag_sizes.BagSizesSelection())] == ["BRCA", "BLCA"]
        report = run(project, bag_sizes.BagSizesSelection(cancers=["brca"]))
        assert report.ok and [i.key for i in report.items] == ["BRCA"]
        assert (root / "bag_sizes" / "BRCA.csv").read_text().startswith("patient_id,patches\n")

        app = typer.Typer()
        app.callback()(lambda: None)
        app.command("bag-sizes")(command.bag_sizes)
        monkeypatch.chdir(root)
        listed = CliRunner().invoke(app, ["bag-sizes", "--list-tasks"], catch_exceptions=False)
        assert listed.exit_code == 0 and listed.stdout == "0\tBRCA\tdone\n1\tBLCA\tpending\n"
        task = CliRunner().invoke(app, ["bag-sizes", "--task-index", "1", "--json"], catch_exceptions=False)
        assert task.exit_code == 0 and (root / "bag_sizes" / "BLCA.csv").is_file()
    finally:
        STAGES._items.pop("bag-sizes", None)
        STAGES._origins.pop("bag-sizes", None)
        from stephctl import _tasks

        _tasks._BUILDERS.pop("bag-sizes", None)
        for name in ("my_lab_stages", "my_lab_stages.bag_sizes", "my_lab_stages.command"):
            sys.modules.pop(name, None)
