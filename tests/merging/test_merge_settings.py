"""Settings per merge method: ``merge.<method>: {...}`` blocks, their layers and the docs tables."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from _repo import REPO

from steph.config import ProjectConfig, dump_yaml, load_config, to_plain
from steph.config._loader import build
from steph.config.merge import MOVED_TO_OPTIONS, MergeConfig, merge_config_of
from steph.errors import ConfigError
from steph.merging import MERGE_METHODS, list_methods
from steph.merging.inputs import check_blocks, for_method
from steph.merging.method_settings import BUILTIN_SETTINGS
from steph.merging.paper import Variant
from steph.merging.settings import flag_fields

DOCS = REPO / "docs"


def merge_of(section: dict) -> MergeConfig:
    return build(ProjectConfig, {"merge": section}).merge


def run_name(merge: MergeConfig, name: str) -> str:
    method = MERGE_METHODS.get(name)
    return method.run_name(for_method(merge, method))


def test_a_block_wins_over_the_general_layer_for_its_method_only() -> None:
    merge = merge_of(
        {"options": {"top_k": 3}, "steph": {"top_k": 2, "gamma": 0.05}, "ties": {"density": 0.3}}
    )
    check_blocks(merge)
    assert merge.per_method == {"steph": {"top_k": 2, "gamma": 0.05}, "ties": {"density": 0.3}}
    assert run_name(merge, "steph") == "steph-top2-gamma0.05"
    assert run_name(merge, "roupkt") == "roupkt-top3"  # the general layer
    assert run_name(merge, "ties") == "ties-density0.3"
    assert MERGE_METHODS.get("ties").settings(merge).density == 0.3


def test_a_block_gives_the_same_folder_and_record_as_the_flat_keys() -> None:
    ties = MERGE_METHODS.get("ties")
    block = for_method(merge_of({"ties": {"density": 0.3, "scale": 0.5}}), ties)
    flat = for_method(merge_of({"options": {"density": 0.3, "scale": 0.5}}), ties)
    assert block == flat and to_plain(block) == to_plain(flat)
    assert "per_method" not in to_plain(block) and set(to_plain(block)) == set(to_plain(MergeConfig()))


def test_blocks_are_checked_strictly_with_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=r"merge\.stepp.*did you mean 'steph'"):
        check_blocks(merge_of({"stepp": {"top_k": 2}}))
    with pytest.raises(ConfigError, match=r"merge\.steph\.topk.*did you mean 'top_k'"):
        check_blocks(merge_of({"steph": {"topk": 2}}))
    with pytest.raises(ConfigError, match=r"merge\.ties\.density: expected a number"):
        check_blocks(merge_of({"ties": {"density": "dense"}}))
    with pytest.raises(ConfigError, match=r"merge\.steph\.mix.*not one of"):
        check_blocks(merge_of({"steph": {"mix": "blend"}}))
    with pytest.raises(ConfigError, match=r"merge\.top_kk.*did you mean 'options\.top_k'"):
        merge_of({"top_kk": 2})
    check_blocks(merge_of({"steph": {"gamma": "auto"}}))  # resolved per fold


def test_paper_variants_still_win_over_a_block() -> None:
    merge = merge_of({"steph": {"mix": "global", "top_k": 2}})
    row = Variant("lambda = 0", "steph", {"mix": "fixed", "fixed_lambda": 0.0}).apply(merge)
    assert run_name(row, "steph") == "steph-fixed-lambda0-top2"


def test_command_line_wins_over_the_blocks_of_stephctl_yaml(tmp_path: Path) -> None:
    (tmp_path / "stephctl.yaml").write_text(
        yaml.safe_dump({"merge": {"top_k": 3, "steph": {"top_k": 2, "beta": 0.1}}}), encoding="utf-8"
    )
    config = load_config(tmp_path, {"merge.top_k": 4})
    assert config.merge.per_method == {"steph": {"beta": 0.1}} and run_name(config.merge, "steph") == (
        "steph-top4-beta0.1"
    )
    one = load_config(tmp_path, {"merge.steph.top_k": 1})  # --option steph.top_k=1
    assert run_name(one.merge, "steph") == "steph-top1-beta0.1" and one.merge.options["top_k"] == 3
    again = build(ProjectConfig, yaml.safe_load(dump_yaml(config)))  # config.yaml reads back
    assert again.merge == config.merge


def test_option_method_key_on_the_command_line(cli, tmp_path: Path) -> None:
    from stephctl.commands.merge import _parse_options

    assert _parse_options(["steph.top_k=2", "density=0.3"]) == {
        "merge.steph.top_k": 2,
        "merge.options.density": 0.3,
    }
    bad = cli("merge", "--target", "BRCA", "--option", ".k=2")
    assert bad.exit_code != 0 and "METHOD.KEY=VALUE" in bad.output


def test_flags_and_list_methods_come_from_the_settings_classes() -> None:
    from steph.merging.builtin import BUILTIN_METHODS
    from stephctl.commands.merge import SETTING_FLAGS

    builtin = [cls() for cls in BUILTIN_METHODS]
    assert builtin and all(m.settings_class in BUILTIN_SETTINGS for m in builtin)
    assert set(SETTING_FLAGS) == set(flag_fields([m.settings_class for m in builtin]))
    assert set(SETTING_FLAGS) == set(MOVED_TO_OPTIONS)  # the old merge: fields, flags as before
    for name in SETTING_FLAGS:  # each flag reaches a method that reads it
        assert any(name in m.setting_names() for m in builtin), name
    rows = {row["name"]: row for row in list_methods()}
    for name, method in MERGE_METHODS.items():
        declared = [f.name for f in dataclasses.fields(method.settings_class)]
        assert [f["name"] for f in rows[name]["fields"]] == declared == list(method.setting_names()), name
    steph = {f["name"]: f for f in rows["steph"]["fields"]}
    assert steph["top_k"]["flag"] == "--top-k" and steph["top_k"]["block"] == "merge.steph.top_k"
    assert steph["base"]["flag"] == "--option base=theta0" and steph["base"]["where"] == "merge.options.base"
    assert (
        steph["sparse"]["flag"] == "--sparse/--no-sparse" and steph["top_k"]["where"] == "merge.options.top_k"
    )


def test_old_merge_fields_read_as_options(tmp_path: Path, caplog) -> None:
    """stephctl.yaml, overrides and records written when top_k ... were ``merge:`` fields."""
    old = {"top_k": 3, "gamma": 0.005, "beta": 0.05, "mix": "fixed", "fixed_lambda": 0.0, "sparse": True}
    (tmp_path / "stephctl.yaml").write_text(yaml.safe_dump({"merge": old}), encoding="utf-8")
    config = load_config(tmp_path)
    assert config.merge.options == {"top_k": 3, "mix": "fixed", "fixed_lambda": 0.0}  # old defaults left out
    assert "merge.top_k" in caplog.text and "merge.options" in caplog.text
    assert run_name(config.merge, "steph") == "steph-fixed-lambda0-top3"
    assert load_config(tmp_path, {"merge.top_k": 2, "merge.sparse": True}).merge.options["top_k"] == 2
    record = {**to_plain(MergeConfig()), **old, "top_k": None, "weights": "hypernet"}
    assert merge_config_of(record).options == {"mix": "fixed", "fixed_lambda": 0.0}
    (tmp_path / "stephctl.yaml").write_text(
        yaml.safe_dump({"merge": {"top_k": 3, "options": {"top_k": 2}}}), encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"merge\.top_k and merge\.options\.top_k are both set"):
        load_config(tmp_path)


def test_a_setting_out_of_range_is_refused_before_any_work() -> None:
    for options, message in (({"top_k": 0}, "top_k must be >= 1"), ({"gamma": -1.0}, "gamma must be >= 0")):
        with pytest.raises(ConfigError, match=message):
            MERGE_METHODS.get("steph").check(MergeConfig(options=options), 4)


def test_docs_merge_tables_match_the_settings_dataclasses() -> None:
    from steph.merging.reference import update_markdown

    text = (DOCS / "merge.md").read_text(encoding="utf-8")
    assert update_markdown(text) == text, "run: python -m steph.merging.reference docs/merge.md"
    for name in ("steph", "ties", "roupkt", "surgery-adamerging"):
        assert f"#### `{name}`" in text


def test_a_block_runs_and_its_record_equals_the_flat_keys_one(tmp_path_factory, tmp_path: Path) -> None:
    from _merge_project import project_copy

    from steph.config import load_project
    from steph.fileio import read_json
    from steph.pipeline.merge import merge_models
    from steph.report import Status

    root = project_copy(tmp_path_factory, tmp_path / "p")
    config_file = root / "stephctl.yaml"
    data = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    data.setdefault("merge", {})["ties"] = {"density": 0.3}
    config_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    layout, config = load_project(root)
    report = merge_models(layout, config, target="BRCA", methods=["ties"], folds=[0])
    assert [(i.key, i.status) for i in report.items] == [("BRCA/ties-density0.3/fold_0", Status.DONE)]
    meta = read_json(layout.merged_meta("BRCA", "ties-density0.3", 0))
    assert meta["options"]["density"] == 0.3 and meta["merge_config"]["options"] == {"density": 0.3}
    assert "per_method" not in meta["merge_config"] and "ties" not in meta["merge_config"]
    del data["merge"]["ties"]
    config_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    layout, flat = load_project(root, {"merge.options.density": 0.3})
    again = merge_models(layout, flat, target="BRCA", methods=["ties"], folds=[0])
    assert [i.status for i in again.items] == [Status.SKIPPED]  # the same settings: the same run


def test_runs_recorded_before_a_setting_existed_stay_done() -> None:
    """A setting added to a method after a run was made matches at its default; any recorded
    value that differs from the wanted one does not."""
    from steph.config import MergeConfig as Merge
    from steph.merging import MERGE_METHODS as methods

    steph = methods.get("steph")
    wanted = steph.options(Merge())
    older = {k: v for k, v in wanted.items() if k not in ("clamp_weights", "target_as_source")}
    assert steph.same_options(older, wanted)
    assert steph.same_options({**wanted, "gone_setting": 1}, wanted)
    assert not steph.same_options({**wanted, "top_k": wanted["top_k"] + 1}, wanted)
    not_default = {**wanted, "clamp_weights": not wanted["clamp_weights"]}
    assert not steph.same_options(older, not_default)
