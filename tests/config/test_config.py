"""Config loading: defaults, the init template, unknown keys, bad types, flag precedence."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _repo import REPO

from steph.config import ProjectConfig, dump_yaml, load_config, to_plain
from steph.errors import ConfigError, MissingArtifactError


def write(project: Path, text: str) -> None:
    (project / "stephctl.yaml").write_text(text)


def test_init_template_loads_to_defaults(empty_project: Path) -> None:
    assert to_plain(load_config(empty_project)) == to_plain(ProjectConfig())


def test_missing_config_names_init(tmp_path: Path) -> None:
    with pytest.raises(MissingArtifactError, match="not a stephctl project") as info:
        load_config(tmp_path)
    assert "stephctl init" in (info.value.hint or "")


def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    write(tmp_path, "train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'; did you mean 'epochs'"):
        load_config(tmp_path)


def test_unknown_top_level_section(tmp_path: Path) -> None:
    write(tmp_path, "merg:\n  top_k: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'merge'"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("train:\n  epochs: many\n", "train.epochs: expected an integer"),
        ("train:\n  lr: [1]\n", "train.lr: expected a number"),
        ("extract:\n  mpp_range: [2, 1]\n", "mpp_range"),
        ("cancers: [brca, BRCA]\n", "duplicate"),
        ("cancers: [BRCA, BLCA]\ntargets: [KIRC]\n", "targets: KIRC not among cancers"),
        ("- a list\n", "top level must be a mapping"),
    ],
)
def test_bad_values(tmp_path: Path, text: str, match: str) -> None:
    write(tmp_path, text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("merge:\n  sparse: maybe\n", "merge.options.sparse = 'maybe' for method 'steph': expected bool"),
        ("merge:\n  mix: sometimes\n", "merge.options.mix = 'sometimes' for method 'steph'"),
        ("merge:\n  top_k: 0\n", "top_k must be >= 1"),
        ("merge:\n  steph:\n    mix: sometimes\n", "merge.steph.mix: 'sometimes' is not one of"),
    ],
)
def test_bad_method_settings_are_refused_before_any_work(tmp_path: Path, text: str, match: str) -> None:
    """Method settings are checked by the method's settings class (merge.top_k ... moved into
    merge.options), when the merge is planned."""
    from steph.merging.inputs import requested_methods

    write(tmp_path, text)
    with pytest.raises(ConfigError, match=match):
        config = load_config(tmp_path)
        for method in requested_methods(config, ["steph"]):
            method.check(config.merge, 5)


def test_flags_win_over_file_and_unset_flags_do_not(tmp_path: Path) -> None:
    write(tmp_path, "train:\n  epochs: 7\n  lr: 0.001\nmerge:\n  top_k: 3\n")
    cfg = load_config(tmp_path, {"train.epochs": 2, "train.lr": None, "merge.gamma": 0.05})
    assert cfg.train.epochs == 2  # flag wins
    assert cfg.train.lr == 0.001  # flag not given: file value
    assert cfg.merge.options["top_k"] == 3  # merge.top_k, its old spelling
    assert cfg.merge.options["gamma"] == 0.05
    assert cfg.train.batch_size == 16  # default


def test_cancers_are_normalised(tmp_path: Path) -> None:
    write(tmp_path, "cancers: [tcga_brca, blca]\n")
    assert load_config(tmp_path).cancers == ["BRCA", "BLCA"]


def test_targets_make_the_other_cancers_sources_on_one_fold(tmp_path: Path) -> None:
    """``targets:`` declares the work: sources are trained (and expected) on merge.source_fold only."""
    from steph.config.project import open_project
    from steph.fileio import write_csv
    from steph.hpc.status import project_status
    from steph.layout import ProjectLayout
    from steph.stages import TrainSourceSelection, plan

    layout = ProjectLayout(tmp_path)
    for cancer in ("BRCA", "BLCA"):
        for k in range(3):
            write_csv(layout.split(cancer, k), ["train", "test"], [["a", "b"]])
    write(tmp_path, "cancers: [BRCA, BLCA]\ntargets: [brca]\nmerge:\n  source_fold: 1\n")
    project = open_project(tmp_path)
    assert project.targets == ["BRCA"]
    assert project.folds("BRCA") == [0, 1, 2] and project.folds("BLCA") == [1]
    keys = [u.key for u in plan(project, TrainSourceSelection())]
    assert keys == ["BRCA/fold_0", "BRCA/fold_1", "BRCA/fold_2", "BLCA/fold_1"]
    merge = project_status(layout, project.config).stage("merge")
    assert set(merge.groups) <= {"BRCA"} and not any("BLCA" in e for e in merge.errors)
    write(tmp_path, "cancers: [BRCA, BLCA]\n")  # no targets: every cancer on every fold
    assert open_project(tmp_path).folds("BLCA") == [0, 1, 2]


def test_dump_roundtrip(tmp_path: Path) -> None:
    write(tmp_path, "encoder: uni2-h\nmerge:\n  options: {scale: 0.4}\n")
    cfg = load_config(tmp_path)
    write(tmp_path, dump_yaml(cfg))
    assert load_config(tmp_path) == cfg
    assert yaml.safe_load(dump_yaml(cfg))["merge"]["options"] == {"scale": 0.4}


def test_configuration_docs_are_current() -> None:
    from steph.config.reference import update_markdown

    docs = REPO / "docs" / "configuration.md"
    text = docs.read_text()
    assert update_markdown(text) == text, "run: python -m steph.config.reference docs/configuration.md"


def test_generated_blocks_are_spliced_between_their_markers() -> None:
    import doctest

    import steph.fileio
    from steph.fileio import splice_between

    text = "intro\n<!-- B -->\nstale\n<!-- E -->\noutro\n"
    once = splice_between(text, "<!-- B -->", "<!-- E -->", "fresh")
    assert once == "intro\n<!-- B -->\n\nfresh\n<!-- E -->\noutro\n"
    assert splice_between(once, "<!-- B -->", "<!-- E -->", "fresh") == once  # idempotent
    result = doctest.testmod(steph.fileio)  # atomic_path's and splice_between's examples
    assert result.attempted > 0 and result.failed == 0
