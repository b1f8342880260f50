"""benchmarks/run.py (the runner of every bench_*.py) and the transfer benchmark's table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_test_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def test_runner_collects_figures_and_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = load("run")
    (tmp_path / "bench_good.py").write_text(
        "def run(quick=False):\n    return {'quick': quick, 'ratio': 2.0}\n"
    )
    (tmp_path / "bench_bad.py").write_text("def run(quick=False):\n    raise ValueError('boom')\n")
    (tmp_path / "helper.py").write_text("raise SystemExit('not a benchmark, never imported')\n")
    monkeypatch.setattr(runner, "HERE", tmp_path)
    monkeypatch.setattr(runner, "RESULTS", tmp_path / "results")
    out = tmp_path / "all.json"
    code = runner.main(["--quick", "--out", str(out)])
    assert code == 1  # one benchmark raised
    document = json.loads(out.read_text())
    assert document["quick"] is True
    assert document["benchmarks"]["good"] == {
        "ok": True,
        "figures": {"quick": True, "ratio": 2.0},
        "seconds": pytest.approx(0, abs=5),
    }
    assert (
        document["benchmarks"]["bad"]["ok"] is False
        and "ValueError: boom" in document["benchmarks"]["bad"]["error"]
    )
    assert {"cpu", "logical_cores", "usable_cores", "ram_gb", "torch", "gpu"} <= set(document["machine"])
    assert len(list((tmp_path / "results").glob("*-quick.json"))) == 1


def test_runner_refuses_unknown_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = load("run")
    (tmp_path / "bench_good.py").write_text("def run(quick=False):\n    return {}\n")
    monkeypatch.setattr(runner, "HERE", tmp_path)
    with pytest.raises(SystemExit, match=r"unknown benchmark.*available: good"):
        runner.discover(["nope"])


def test_transfer_table_reports_means_and_paired_gains() -> None:
    transfer = load("transfer")

    def entry(values: list[float]) -> dict[str, object]:
        return {"values": values, **transfer._summary(values)}

    results = [
        {
            "sharing": 0.5,
            "oracle": entry([0.8, 0.8]),
            "methods": {"cancer-specific": entry([0.6, 0.7]), "STEPH": entry([0.7, 0.6])},
        }
    ]
    table = transfer.markdown(results)
    assert "| cancer-specific | 0.6500 (0.071) |" in table
    assert "| *oracle (true risk)* | 0.8000 (0.000) |" in table
    assert "| STEPH | +0.0000 (1/2) |" in table
