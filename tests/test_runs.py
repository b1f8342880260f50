"""Method names users type (`-m steph`) reach the run folders the project has (`steph-top2`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from steph.config import ProjectConfig
from steph.config.merge import MergeConfig
from steph.errors import UnknownNameError
from steph.fileio import write_json
from steph.layout import ProjectLayout
from steph.records import MergeRecord
from steph.runs import resolve_run, run_method, settings_run


def _record(layout: ProjectLayout, target: str, run: str, method: str, fold: int) -> None:
    MergeRecord(method=method, run=run, target=target, fold=fold).write(layout.merged_meta(target, run, fold))


def _run(layout: ProjectLayout, target: str, run: str, method: str, folds: int = 2) -> None:
    for k in range(folds):
        _record(layout, target, run, method, k)
        write_json(layout.result_metrics(target, run, k), {"c_index": 0.6})


def test_a_method_with_one_run_reaches_it_and_several_are_listed(tmp_path: Path) -> None:
    layout = ProjectLayout(tmp_path)
    assert resolve_run(layout, "BRCA", "steph") == "steph"  # nothing yet: the caller says what to run
    _run(layout, "BRCA", "steph-top2", "steph")
    _run(layout, "BRCA", "task-arithmetic", "task-arithmetic")
    write_json(layout.result_metrics("BRCA", "cancer-specific", 0), {"c_index": 0.5})
    assert run_method(layout, "BRCA", "steph-top2") == "steph"
    assert resolve_run(layout, "brca", "steph") == "steph-top2"
    assert resolve_run(layout, "BRCA", "steph-top2") == "steph-top2"
    assert resolve_run(layout, "BRCA", "cancer-specific") == "cancer-specific"
    with pytest.raises(UnknownNameError, match=r"no run of method 'ties'.*steph-top2") as missing:
        resolve_run(layout, "BRCA", "ties")
    assert "--method ties" in (missing.value.hint or "")
    assert resolve_run(layout, "BRCA", "ties", strict=False) == "ties"

    _run(layout, "BRCA", "steph-fixed-lambda0", "steph")
    with pytest.raises(UnknownNameError, match="'steph' has 2 runs: steph-fixed-lambda0, steph-top2"):
        resolve_run(layout, "BRCA", "steph")
    # of several runs, the one the project's settings make (the demo's top_k 2, beside an ablation)
    config = ProjectConfig(merge=MergeConfig(options={"top_k": 2}))
    assert settings_run(config, "steph") == "steph-top2"
    assert resolve_run(layout, "BRCA", "steph", config=config) == "steph-top2"
    assert settings_run(config, "no-such-method") is None


def test_evaluate_and_explain_take_the_method_name(empty_project: Path, cli) -> None:
    """The README's `-m steph` on a project whose only STEPH run is `steph-top2`."""
    from steph.synthetic.results import write_results

    layout = write_results(
        empty_project, targets=("BRCA",), methods={"cancer-specific": 0.5, "steph-top2": 0.7}, folds=3
    )
    for k in range(3):
        _record(layout, "BRCA", "steph-top2", "steph", k)
    out = cli("-p", empty_project, "evaluate", "-m", "steph", "--bootstrap", "0", "--no-report", "--json")
    assert out.exit_code == 0, out.output
    assert "steph-top2" in out.stdout
    explained = cli("-p", empty_project, "explain", "-t", "BRCA", "-m", "steph", "-k", "0", "--top", "1")
    assert "steph-top2" in explained.output and "method 'steph'" not in explained.output
