"""Issue 16, items 2, 8b-d, 9 and 10c/d/f/g: hostile config and names are refused in one line,
per-stage Slurm options, the truncated-model hint, status's merge rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cohorts import make_feature_project
from _hpc import set_config
from _merge_project import project_copy

from steph.config import load_config, load_project
from steph.errors import ConfigError, LayoutError
from steph.hpc.status import project_status
from steph.layout import check_safe_id


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_feature_project(tmp_path_factory.mktemp("inputs") / "p", n_patients=10, folds=2)


def _config_text(root: Path, text: str) -> Path:
    (root / "stephctl.yaml").write_text(text)
    return root


def test_slurm_extra_cannot_inject_a_shell_line(project: Path, cli, tmp_path: Path) -> None:
    """Item 2: `extra: ["--qos\\ntouch pwned\\n#=normal"]` wrote a bare `touch pwned` line."""
    root = tmp_path / "p"
    root.mkdir()
    for bad in ("--qos\ntouch pwned\n#=normal", "--qos\r=normal", "touch pwned", "--qos;id=x"):
        _config_text(root, json.dumps({"slurm": {"extra": [bad]}}))
        with pytest.raises(ConfigError, match=r"slurm\.extra"):
            load_config(root)
    set_config(project, {"slurm.extra": ["--qos\ntouch pwned\n#=normal"]})
    try:
        result = cli("-p", project, "slurm", "train-source")
    finally:
        set_config(project, {"slurm.extra": ["--qos=normal", "--exclusive"]})
    assert result.exit_code == 1 and "touch pwned" not in result.stdout
    script = cli("-p", project, "slurm", "train-source")
    assert script.exit_code == 0, script.output
    assert "#SBATCH --qos=normal" in script.stdout.splitlines() and "#SBATCH --exclusive" in script.stdout
    set_config(project, {"slurm.extra": []})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "train: {lr: .nan}\n",
            "train.lr: '.nan' is not a finite number|train.lr: nan is not a finite number",
        ),
        ("train: {lr: .inf}\n", "not a finite number"),
        ("merge: {gamma: -.inf}\n", "not a finite number"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
        (
            "merge:\n  options:\n    a: &a [x, x, x, x, x, x, x, x, x]\n    b: &b [*a, *a, *a, *a, *a, *a]\n",
            "YAML",
        ),
        ("encoder: !!python/name:os.system x\n", "not valid YAML"),
        ("x: '" + "y" * 1_100_000 + "'\n", "larger than"),
    ],
    ids=["nan", "inf", "minus-inf", "depth-5000", "alias-bomb", "python-tag", "size"],
)
def test_hostile_config_is_one_config_error(tmp_path: Path, text: str, message: str) -> None:
    """Items 8b-d: NaN passed validation, 5,000-deep YAML raised RecursionError, an alias bomb
    under merge.options was accepted (MemoryError later)."""
    root = tmp_path / "p"
    root.mkdir()
    _config_text(root, text)
    with pytest.raises(ConfigError, match=message):
        load_config(root)


def test_nan_lr_is_refused_before_overwrite_removes_anything(cli, tmp_path: Path) -> None:
    """Item 8b: with `train: {lr: .nan}` and --overwrite the old meta.json was already gone when
    the optimiser failed; now nothing is touched and the error is one line, exit 1."""
    root = make_feature_project(tmp_path / "p", cancers=("BRCA",))
    assert cli("-p", root, "train-source", "--fold", "0", "--device", "cpu").exit_code == 0
    set_config(root, {"train.lr": float("nan")})
    result = cli("-p", root, "train-source", "--fold", "0", "--overwrite", "--device", "cpu")
    assert result.exit_code == 1 and "train.lr" in result.output and "finite" in result.output
    set_config(root, {"train.lr": 1e-3})
    layout, _ = load_project(root)
    assert layout.model_meta("BRCA", 0).is_file()


def test_file_errors_are_reported_even_when_a_flag_overrides_the_key(project: Path, cli) -> None:
    """Item 10f: `train.epochs: many` was not reported when --epochs was given."""
    set_config(project, {"train.epochs": "many"})
    try:
        result = cli("-p", project, "train-source", "--epochs", "2", "--list-tasks")
        with pytest.raises(ConfigError, match=r"train\.epochs"):
            load_config(project, {"train.epochs": 2})
    finally:
        set_config(project, {"train.epochs": 2})
    assert result.exit_code == 1 and "train.epochs" in result.output


@pytest.mark.parametrize("name", ["nl\n", "x\r", "a\nb", "synthetic\n"])
def test_safe_names_refuse_trailing_newlines(name: str) -> None:
    """Item 9: `re.match` with `$` accepted a trailing newline (`--name $'nl\\n'`)."""
    with pytest.raises(LayoutError):
        check_safe_id(name, "name")


def test_encoder_and_prediction_name_with_newline_are_refused(project: Path, tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    _config_text(root, 'encoder: "synthetic\\n"\n')
    with pytest.raises(LayoutError, match="encoder name"):
        load_config(root)
    layout, _ = load_project(project)
    with pytest.raises(LayoutError, match="prediction run name"):
        layout.predict_dir("nl\n")


def test_slurm_per_stage_options(project: Path, cli) -> None:
    """Item 10g: `stephctl slurm train-source merge` could not be written (options after `--`
    go to every stage, and train-source has no --target)."""
    result = cli(
        "-p", project, "slurm", "train-source", "merge",
        "--stage-options", "train-source=--cancer BRCA",
        "--stage-options", "merge=--target BRCA --method model-avg",
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [(j["stage"], j["tasks"]) for j in document["jobs"]] == [("train-source", 2), ("merge", 2)]
    lines = document["script"].splitlines()
    tasks = [line for line in lines if line.endswith('--task-index "$SLURM_ARRAY_TASK_ID"')]
    train = next(line for line in tasks if " train-source " in line)
    merge = next(line for line in tasks if " merge " in line)
    assert "--cancer BRCA" in train and "--target" not in train
    assert "--target BRCA --method model-avg" in merge and "--cancer" not in merge
    bad = cli("-p", project, "slurm", "train-source", "--stage-options", "merge=--target BRCA")
    assert bad.exit_code == 1 and "not among the stages" in bad.output


def test_truncated_model_hint_is_a_command_that_fixes_it(cli, tmp_path_factory, tmp_path: Path) -> None:
    """Item 10c: the hint omitted --overwrite, so following it gave 'skipped', exit 0."""
    root = project_copy(tmp_path_factory, tmp_path / "p")
    layout, _ = load_project(root)
    weights = layout.model_weights("BRCA", 1)
    weights.write_bytes(weights.read_bytes()[:100])
    result = cli("-p", root, "task-vector", "--cancer", "BRCA", "--fold", "1", "--overwrite", "--json")
    assert result.exit_code == 2, result.output
    [item] = json.loads(result.stdout)["items"]
    hint = item["message"].split("`")[1]
    assert hint.endswith("train-source --cancer BRCA --fold 1 --overwrite")
    assert cli(*hint.split()[1:], "--device", "cpu").exit_code == 0
    assert cli("-p", root, "task-vector", "--cancer", "BRCA", "--fold", "1", "--overwrite").exit_code == 0


def test_status_merge_row_counts_runs_made_with_flags(tmp_path_factory, tmp_path: Path) -> None:
    """Item 10d: status's merge row ignored runs made with CLI flags (`merge --method ties`)."""
    root = project_copy(tmp_path_factory, tmp_path / "p")
    layout, config = load_project(root)
    before = project_status(layout, config).stage("merge")
    record = layout.merged_file("BRCA", "ties", 0, "meta.json")  # a finished `merge --method ties` fold
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    after = project_status(layout, config).stage("merge")
    assert (after.total, after.done) == (before.total + 2, before.done + 1)
    assert "BRCA/ties/fold_1" in after.missing


def test_merge_option_values_are_read_as_user_yaml(project: Path, cli) -> None:
    """`--option K=V` values go through the same YAML rules as stephctl.yaml: an anchor or alias
    is one red line (exit 1), plain text that is not YAML stays text."""
    from stephctl.commands.merge import _parse_options

    assert _parse_options(["scale=0.5", "name=a: b: c", "grid=[1, 2]"]) == {
        "merge.options.scale": 0.5,
        "merge.options.name": "a: b: c",
        "merge.options.grid": [1, 2],
    }
    result = cli("-p", project, "merge", "--target", "BRCA", "--option", "x=&a [1, *a]")
    assert result.exit_code == 1
    assert "anchors" in result.output and "Traceback" not in result.output
