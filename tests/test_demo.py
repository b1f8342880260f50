"""`stephctl demo`: the CI end-to-end exercise of the whole pipeline on generated slides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from steph.config import load_config
from steph.demo import METHODS, SOURCES, TARGET
from steph.errors import ConfigError
from steph.layout import ProjectLayout
from steph.synthetic.project import init_configured_project, set_yaml_value


def test_configured_project_keeps_the_template_comments(tmp_path: Path) -> None:
    layout = init_configured_project(
        tmp_path / "p",
        cancers=["BRCA", "BLCA"],
        encoder="tiny-cnn",
        overrides={"train.epochs": 3},
        note="demo",
    )
    text = layout.config_file.read_text()
    assert "epochs: 3  # demo (default 20)" in text
    assert "# Patch encoder" in text  # the commented template of `stephctl init`
    config = load_config(layout.root)
    assert config.train.epochs == 3 and config.cancers == ["BRCA", "BLCA"]
    again = init_configured_project(
        layout.root, cancers=["BRCA"], encoder="x", overrides={"train.epochs": 9}, note="n"
    )
    assert load_config(again.root).train.epochs == 3  # an existing project is left as it is


def test_set_yaml_value_only_matches_the_dotted_path() -> None:
    text = "train:\n  epochs: 20\nmerge:\n  epochs: null\n  tissue:\n    epochs: 1\n"
    out = yaml.safe_load(set_yaml_value(text, "merge.epochs", 4, note="x"))
    assert out == {"train": {"epochs": 20}, "merge": {"epochs": 4, "tissue": {"epochs": 1}}}
    with pytest.raises(ConfigError, match=r"'train\.lr'"):
        set_yaml_value(text, "train.lr", 1.0, note="x")
    with pytest.raises(ConfigError):
        set_yaml_value(text, "epochs", 1, note="x")  # not a top-level key


@pytest.mark.slow
def test_demo_quick_runs_the_whole_pipeline(tmp_path: Path, cli) -> None:
    root = tmp_path / "demo"
    generated = cli("demo", root, "--quick", "--only-generate")
    assert generated.exit_code == 0, generated.output
    layout = ProjectLayout(root)
    assert layout.manifest.is_file() and not any(layout.features_root.rglob("*.h5"))

    result = cli("demo", root, "--quick")
    assert result.exit_code == 0, result.output
    assert "oracle (true risk)" in result.output and "report:" in result.output
    slides = [line.split(",")[0] for line in layout.manifest.read_text().splitlines()[1:]]
    assert slides and all(layout.own_features("tiny-cnn", s).is_file() for s in slides)
    for fold in range(5):
        assert layout.model_weights(TARGET, fold).is_file()
        assert layout.task_vector(TARGET, fold).is_file()
        assert layout.result_metrics(TARGET, "cancer-specific", fold).is_file()
    for source in SOURCES:
        assert layout.task_vector(source, 0).is_file()
    methods = layout.result_methods(TARGET)
    for method in METHODS:
        assert any(m == method or m.startswith(f"{method}-") for m in methods), methods
    assert layout.summary.is_file()
    assert layout.report_file(TARGET, "report.html").is_file()
    pages = layout.patient_pages(TARGET)
    assert len(pages) == 2 and result.output.count("patient page:") == 2
    assert not any("no transfer for this patient" in p.read_text() for p in pages)  # shows a transfer
    assert "patients/index.html" in layout.report_file(TARGET, "report.html").read_text()
    assert "note: --quick is a smoke test" in " ".join(result.output.split())

    status = cli("-p", root, "status", "--json")  # the project declares what the demo trains
    stages = json.loads(status.stdout)["stages"]
    assert all(stage["complete"] for stage in stages), [(s["stage"], s["missing"]) for s in stages]
    evaluated = cli("-p", root, "evaluate", "--bootstrap", "0", "--no-report", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert "cancer-specific" not in json.loads(evaluated.stdout)["summary"]["over_targets"]  # 5 vs 1 folds

    again = cli("demo", root, "--quick", "--json")
    assert again.exit_code == 0, again.output
    document = json.loads(again.stdout)
    assert document["ok"] and document["oracle_c_index"] > 0.5
    assert document["note"].startswith("--quick is a smoke test: 6 test patients per fold")
    reran = {s["stage"]: s["counts"]["done"] for s in document["stages"] if s["stage"] != "evaluate"}
    assert set(reran.values()) == {0}, reran  # the second run reuses everything
    assert {row["method"] for row in document["c_index"]} >= {"cancer-specific"}

    refused = cli("demo", root)  # the full demo's cohort differs from the quick one in this folder
    assert refused.exit_code == 1


def test_demo_progress_names_the_stage_and_the_elapsed_time(monkeypatch, caplog) -> None:
    """Stages are shown by name with the time so far, never as "0.0 stages/s"."""
    import io
    import logging

    from rich.console import Console

    from stephctl import _common
    from stephctl._common import CliProgress

    def drive(progress: CliProgress) -> None:
        progress.start("demo", 3, unit="stages")
        for name in ("generate", "extract"):
            progress.advance("demo", 0, item=name)
            progress.advance("demo", 1, item=name)
        progress.finish("demo")

    monkeypatch.setattr(_common.err_console, "_file", io.StringIO())  # not a terminal; restored to None
    with caplog.at_level(logging.INFO, logger="stephctl.progress"), CliProgress(interval_s=3600) as progress:
        assert progress._bar is None
        drive(progress)
    lines = [r.getMessage() for r in caplog.records if r.name == "stephctl.progress"]
    assert (
        "demo: generate (1/3), 00:00:00 elapsed" in lines and "demo: extract (2/3), 00:00:00 elapsed" in lines
    )
    assert not any("stages/s" in line for line in lines)

    screen = io.StringIO()
    monkeypatch.setattr(_common, "err_console", Console(file=screen, force_terminal=True, width=160))
    with CliProgress() as progress:
        assert progress._bar is not None
        progress.start("demo", 3, unit="stages")
        progress.advance("demo", 0, item="generate")
        progress.advance("demo", 1, item="generate")
        progress.advance("demo", 0, item="extract")
        progress._bar.refresh()
        assert "demo: extract" in screen.getvalue() and "stages/s" not in screen.getvalue()
