"""Run every performance benchmark and write one JSON with all figures and the machine.

Each ``benchmarks/bench_<name>.py`` exposes ``run(quick: bool = False) -> dict`` returning its
figures (ratios measured side by side in one run, plus absolute numbers). This runner imports
them one by one, records their figures, wall time and any error, and describes the machine
(CPU, cores, RAM, torch, GPU) so numbers from different machines are never compared blindly.

    python -m benchmarks.run [--quick] [--only extract merge] [--out results.json]

Writes ``benchmarks/results/<timestamp>.json`` and, with ``--out``, a copy at that path. Exits 1
when a benchmark raised (its traceback is in the JSON).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def discover(only: list[str] | None = None) -> dict[str, Path]:
    """``{name: path}`` of every ``bench_<name>.py`` next to this file (filtered by ``only``)."""
    found = {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}
    if only:
        unknown = sorted(set(only) - set(found))
        if unknown:
            raise SystemExit(
                f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(found) or 'none'}"
            )
        found = {name: path for name, path in found.items() if name in only}
    return found


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"stephctl_bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise AttributeError(f"{path.name} has no run(quick: bool = False) function")
    return module


def machine() -> dict[str, Any]:
    """CPU model, cores (logical and usable), RAM, Python, torch and GPU, and the git commit."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "ram_gb": _ram_gb(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": _git_commit(),
    }
    try:
        from steph import __version__

        info["stephctl"] = __version__
    except ImportError:  # pragma: no cover - running outside the project environment
        info["stephctl"] = None
    return info


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_all(*, quick: bool, only: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks; returns ``{"machine", "quick", "started", "benchmarks": {name: ...}}``."""
    results: dict[str, Any] = {
        "machine": machine(),
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "benchmarks": {},
    }
    for name, path in discover(only).items():
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        entry: dict[str, Any]
        try:
            figures = load(name, path).run(quick=quick)
            entry = {"ok": True, "figures": figures}
        except Exception as exc:  # a broken benchmark must not hide the others' figures
            entry = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        entry["seconds"] = round(time.perf_counter() - started, 2)
        results["benchmarks"][name] = entry
        print(
            f"[bench] {name}: {'ok' if entry['ok'] else 'FAILED'} in {entry['seconds']} s",
            file=sys.stderr,
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (seconds per benchmark), for CI and smoke tests"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these benchmarks (bench_<NAME>.py)"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    results = run_all(quick=args.quick, only=args.only)
    text = json.dumps(results, indent=2, default=str) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    paths = [RESULTS / f"{stamp}.json", *([args.out] if args.out else [])]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    print(f"[bench] wrote {', '.join(map(str, paths))}", file=sys.stderr)
    return 0 if all(entry["ok"] for entry in results["benchmarks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
