"""benchmarks/run.py (the runner of every bench_*.py) and the transfer benchmark's table."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
from _repo import REPO

BENCHMARKS = REPO / "benchmarks"


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


def test_trace_runs_a_program_and_writes_a_timeline(tmp_path: Path) -> None:
    import subprocess

    trace = load("tracing")
    program = (
        "import sys, time\n"
        "block = bytearray(64 * 2**20)\n"  # 64 MB resident
        "for i in range(0, len(block), 4096):\n"
        "    block[i] = 1\n"
        "time.sleep(0.3)\n"
        "print(sys.argv[1:])\n"
        "sys.exit(3)\n"
    )
    out = tmp_path / "job"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.tracing", str(out), "-c", program, "a", "b"],
        capture_output=True,
        text=True,
        cwd=BENCHMARKS.parent,
    )
    assert done.returncode == 3 and done.stdout.strip() == "['a', 'b']"
    assert Path(f"{out}.pstats").stat().st_size > 0
    timeline = trace.phases(Path(f"{out}.samples.tsv"))
    assert timeline.splitlines()[0].split()[-3:] == ["RSS", "MB", "where"]
    peak_mb = float(timeline.splitlines()[-1].split("peak ")[1].split(" MB")[0])
    assert peak_mb > 64


def test_trace_names_the_innermost_frame_of_our_code() -> None:
    trace = load("tracing")
    namespace: dict = {"sys": sys}
    code = "def inner():\n    return sys._getframe()\n"
    exec(compile(code, "/somewhere/steph/training/fake.py", "exec"), namespace)
    assert trace.where(namespace["inner"]()) == "training/fake.py:inner"
    assert trace.where(sys._getframe()) == "-"  # no frame of ours on the stack


def test_trace_phases_merge_samples_and_count_busy_cores(tmp_path: Path) -> None:
    trace = load("tracing")
    samples = tmp_path / "s.tsv"
    samples.write_text(
        "0.0\t100\t0.0\timport\n0.5\t300\t0.5\timport\n1.0\t300\t0.5\tloop.py:fit\n"
        "2.0\t800\t2.5\tloop.py:fit\n3.0\t500\t4.5\tloop.py:predict\n3.05\t500\t4.55\tloop.py:predict\n"
    )
    lines = trace.phases(samples, min_s=0.1).splitlines()
    assert [line.split()[-1] for line in lines[1:3]] == ["import", "loop.py:fit"]  # predict: < 0.1 s
    fit = lines[2].split()
    assert fit[:4] == ["1.00", "2.00", "2.00", "800"]  # 4 CPU-s over 2 s, until predict starts
    by_place = lines[lines.index("") + 2 :]
    assert [row.split()[-1] for row in by_place[:3]] == ["loop.py:fit", "import", "loop.py:predict"]
    assert by_place[0].split()[:3] == ["2.00", "65.6%", "2.00"]
    assert lines[-1] == "sampled 3.05 s, 4.55 CPU-s; peak 800 MB at 2.00 s in loop.py:fit"


def test_protocol_model_costs_processes_reading_and_arithmetic(tmp_path: Path) -> None:
    cost = load("protocol_cost")
    result = cost.model(rate_gflops=1000.0, peak_gflops=1_000_000.0, process_s=6.0, read_gbps=2.0, gpus=8)
    per_unit, per_target = (
        result["one_device"][k] for k in ("one_process_per_unit", "one_process_per_cancer_or_target")
    )
    assert result["units"] == {"train-source": 65, "merge": 65 * 16}
    assert per_unit["processes"] == 65 + 65 * 16 and per_target["processes"] == 26
    assert per_unit["start_up_h"] == pytest.approx(per_unit["processes"] * 6.0 / 3600, rel=1e-2)
    assert per_unit["reading_h"] > 40 * per_target["reading_h"]  # features read once per target
    assert per_unit["arithmetic_h"] == per_target["arithmetic_h"]
    total_flops = result["analytic_pflop_total"] * 1e15
    assert per_unit["arithmetic_h"] == pytest.approx(total_flops / 1e12 / 3600, rel=1e-2)
    assert result["8_devices"]["one_process_per_unit"]["total_h"] == pytest.approx(
        per_unit["total_h"] / 8, rel=1e-2
    )
    assert result["floor_min"]["at_25pct_of_peak"] == pytest.approx(total_flops / 0.25e15 / 60, rel=1e-2)
    assert result["feature_gb"] == pytest.approx(7268 * cost.mean_bag() * 1536 * 2 / 1e9, rel=1e-3)
    bench = {
        "heavy": {
            "arithmetic": {"bare_gflops": 50.0},
            "peak": {"fp32_gflops": 80.0},
            "ratios": {"bare_fixed_wall_s": 3.0},
        }
    }
    (tmp_path / "train.json").write_text(json.dumps(bench))
    measured = cost.main([str(tmp_path / "train.json"), "--gpus", "2"])
    assert measured["inputs"] == {
        "achieved_gflops": 50.0,
        "peak_gflops": 80.0,
        "process_start_s": 3.0,
        "read_gb_per_s": 2.0,
    }


def test_protocol_model_adds_the_host_time_that_exceeds_each_steps_arithmetic(tmp_path: Path) -> None:
    """A step on an asynchronous device takes the longer of its host time and its arithmetic:
    the model adds, per stage, steps x max(0, host - arithmetic), nothing when the host is
    faster, and the host's whole time (less the arithmetic) when it is slower."""
    cost = load("protocol_cost")
    base = dict(rate_gflops=250_000.0, peak_gflops=990_000.0, process_s=6.0, read_gbps=2.0, gpus=8)
    plain = cost.model(**base)
    per_cancer = 7268 / 13
    steps_per_stage = 13 * 5 * 20 * math.floor(0.8 * per_cancer / 16)
    assert plain["training_steps"] == 17 * steps_per_stage  # train-source + the 16 rows
    assert plain["one_device"]["one_process_per_unit"]["host_over_arithmetic_h"] == 0
    fast = cost.model(**base, host_ms_per_step=dict.fromkeys(cost.HOST_MODEL.values(), 0.01))
    assert fast["one_device"]["one_process_per_unit"]["host_over_arithmetic_h"] == 0
    host = {"train-source": 2.0, "steph": 3.0, "roupkt": 2.0, "adamerging": 2.0}
    slow = cost.model(**base, host_ms_per_step=host)
    arithmetic = slow["arithmetic_ms_per_step"]
    expected = 0.0
    for stage, cost_kind in cost.protocol(cost.mean_bag())["classes"].items():
        ms = host[cost.HOST_MODEL[cost_kind]]
        assert arithmetic[stage] < ms  # every step host-bound at these figures
        expected += steps_per_stage * (ms - arithmetic[stage]) / 1e3
    one = slow["one_device"]["one_process_per_cancer_or_target"]
    assert one["host_over_arithmetic_h"] == pytest.approx(expected / 3600, rel=1e-2)
    assert one["total_h"] == pytest.approx(
        one["start_up_h"] + one["reading_h"] + one["arithmetic_h"] + one["host_over_arithmetic_h"], abs=2e-3
    )
    # the figures read from bench_host's JSON: packs path, 16 bags, µs per bag x 16
    bench = {m: {"packs_16": {"cpu_us_per_bag": 100.0}} for m in ("train-source", "steph", "roupkt")}
    bench["adamerging"] = {"packs_16": {"cpu_us_per_bag": 50.0}}
    (tmp_path / "host.json").write_text(json.dumps(bench))
    figures = cost.host_figures(tmp_path / "host.json")
    assert figures == {"train-source": 1.6, "steph": 1.6, "roupkt": 1.6, "adamerging": 0.8}
    args = ["--rate-gflops", "250000", "--peak-gflops", "990000", "--process-s", "6"]
    printed = cost.main([*args, "--host-json", str(tmp_path / "host.json")])
    assert printed["inputs"]["host_ms_per_step"] == figures
    assert cost.main([*args, "--host-ms-per-step", "2"])["inputs"]["host_ms_per_step"]["steph"] == 2.0


def test_contention_benchmark_sets_threads_and_divides_by_the_fair_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = load("bench_contention")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert "OMP_WAIT_POLICY" not in bench.worker_env("torch")  # PyTorch's defaults
    assert "OMP_WAIT_POLICY" not in bench.worker_env("steph")  # left to steph.threads.configure
    assert bench.worker_env("one-thread")["OMP_NUM_THREADS"] == "1"
    for workload in bench.WORKLOADS:  # one real worker each: set up, wait for go, train a step
        real = bench.concurrent("steph", 1, 1, 32, workload, beside=1 if workload == "steph" else 0)
        assert real["wall_s"] > 0 and real["cpu_s"] > 0 and real["threads"] >= 1
    walls = {("one-thread", 1, 0): 4.0, ("steph", 1, 0): 2.5, ("torch", 1, 0): 2.0}
    seen = []

    def fake(setting: str, n: int, steps: int, dim: int, workload: str, beside: int = 0) -> dict[str, float]:
        seen.append(workload)
        if beside:  # one process beside 4 busy ones: 5 x 4 CPU-s over 2 cores = 10 s fair
            return {
                "wall_s": {"steph": 12.0, "torch": 40.0, "one-thread": 10.0}[setting],
                "cpu_s": 4.0,
                "threads": 1,
            }
        wall = walls.get(
            (setting, n, beside), {"steph": 1.2, "torch": 5.0, "one-thread": 1.0}[setting] * 2.0 * n
        )
        return {"wall_s": wall, "cpu_s": 4.0 * n, "threads": 1}

    monkeypatch.setattr(bench, "concurrent", fake)
    monkeypatch.setattr(bench, "usable_cores", lambda: 2)
    result = bench.run(quick=True)
    assert set(seen) == {"train-source", "steph"}
    steph = result["workloads"]["steph"]["settings"]["steph"]
    torch_default = result["workloads"]["steph"]["settings"]["torch"]
    assert steph["n2"]["fair_share_s"] == 4.0  # 2 x 4 CPU-s of work over 2 cores
    assert steph["n4"] == {
        "wall_s": 9.6,
        "cpu_s": 16.0,
        "threads": 1,
        "fair_share_s": 8.0,
        "over_fair_share": 1.2,
    }
    assert steph["beside4"]["fair_share_s"] == 10.0 and steph["beside4"]["over_fair_share"] == 1.2
    assert torch_default["n4"]["over_fair_share"] == 5.0
    assert torch_default["beside4"]["over_fair_share"] == 4.0
    assert steph["n1"]["over_fair_share"] == 1.0
    assert result["targets_met"] == {
        f"{w}: {what}, over fair share <= 1.3": True
        for w in ("train-source", "steph")
        for what in ("4 processes", "beside 4 busy processes")
    }


def test_contention_benchmark_times_a_whole_command_beside_busy_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = load("bench_contention")
    real = bench.timed_command("steph", tmp_path, ["--help"], beside=1)  # a real stephctl process
    assert real["wall_s"] > 0 and real["cpu_s"] > 0
    with pytest.raises(RuntimeError, match="exited with"):
        bench.timed_command("one-thread", tmp_path, ["no-such-command"])
    with pytest.raises(ValueError, match="not torch"):
        bench.timed_command("torch", tmp_path, ["--help"])
    calls = []

    def fake(setting: str, project: Path, command: list[str], beside: int = 0) -> dict[str, float]:
        calls.append((setting, beside))
        alone = {"one-thread": 6.0, "steph": 5.0}[setting]
        return {"wall_s": alone * (3.0 if beside else 1.0), "cpu_s": 6.0}

    monkeypatch.setattr(bench, "timed_command", fake)
    monkeypatch.setattr(bench, "usable_cores", lambda: 2)
    result = bench.run(workloads=(), project=tmp_path, command=["merge", "--target", "BRCA"])
    figures = result["command"]
    assert figures["command"] == ["stephctl", "merge", "--target", "BRCA"] and figures["work_cpu_s"] == 6.0
    # beside 4 busy processes: 5 x 6 CPU-s over 2 cores = 15 s fair
    assert figures["settings"]["steph"]["beside4"]["fair_share_s"] == 15.0
    assert figures["settings"]["steph"]["beside4"]["over_fair_share"] == 1.0
    assert figures["settings"]["one-thread"]["beside4"]["over_fair_share"] == 1.2
    assert calls == [("one-thread", 0), ("steph", 0), ("steph", 4), ("one-thread", 4)]
    assert result["targets_met"] == {
        "stephctl command: beside 4 busy processes, over fair share <= 1.3": True
    }


@pytest.mark.slow
def test_precision_benchmark_runs_the_demos_stages_once_per_precision(tmp_path: Path) -> None:
    """bench_precision (a part of the GPU session) generates and extracts the quick demo, then
    runs train-source, task-vector and merge through the stages per precision; on CPU every
    precision is fp32, so the hazards and C-indices agree exactly."""
    bench = load("bench_precision")
    result = bench.run(quick=True, device="cpu", precisions=["fp32", "bf16"], work=tmp_path)
    assert set(result["runs"]) == {"fp32", "bf16"}
    for run in result["runs"].values():
        assert set(run["seconds"]) == {"train-source", "task-vector", "merge"}
        assert run["c_index"]
    assert result["runs"]["bf16"]["vs_fp32"] == {"max_abs_hazard_diff": 0.0, "max_abs_c_index_diff": 0.0}


def test_host_benchmark_splits_a_step_into_a_fixed_part_and_a_part_per_bag() -> None:
    """bench_host's split: ``n t(n) = fixed + n marginal`` through the figures at 16 and 64 bags,
    and the fewest units of 16 bags a step needs for the per-bag figure to fall under 50 µs."""
    split = load("bench_host").split_step
    # fixed 640 µs a step, 20 µs a bag: 60 µs a bag at 16 bags, 30 at 64
    assert split(60.0, 30.0) == {
        "fixed_us_per_step": 640.0,
        "marginal_us_per_bag": 20.0,
        "units_for_target": 2,
    }
    # (2 units: 640 / 32 + 20 = 40 < 50; 1 unit: 60.) Already under the target at 16 bags: 1
    assert split(45.0, 25.0)["units_for_target"] == 1
    # exactly on the target with 2 units (800 / 32 + 25 = 50) is not under it: 3
    assert split(75.0, 37.5)["units_for_target"] == 3
    # a cost per bag of 50 µs or more ((64 x 60 - 16 x 90) / 48 = 50): no number of bags a step
    # meets the target
    assert split(90.0, 60.0) == {
        "fixed_us_per_step": 640.0,
        "marginal_us_per_bag": 50.0,
        "units_for_target": None,
    }
