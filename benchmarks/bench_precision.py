"""Mixed precision against fp32 on the demo cohort: C-index, hazards and time (issue 18, item 4).

The demo cohort (``stephctl demo``: four cancers, target BRCA) is generated and extracted once;
then train-source, task-vector and merge (the demo's methods: STEPH, task arithmetic, ROUPKT)
run once per precision on copies of the project, with ``train.precision`` set in the copy's
config and the same seed. Reported per precision: the seconds of each stage, every method's test
C-index per fold, and against fp32 the largest absolute difference of the test hazards and of
the C-index over all methods and folds.

    python -m benchmarks.bench_precision                       # cuda: fp32, bf16 and fp16
    python -m benchmarks.bench_precision --device cpu --quick  # plumbing only (CPU runs fp32)

Prints one JSON document; ``--out FILE`` writes it as well. On CPU every precision resolves to
fp32 (``steph.training.precision``), so the differences are zero there by construction.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _read_predictions(path: Path) -> dict[str, list[float]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {row["patient_id"]: [float(v) for k, v in row.items() if k.startswith("hazard_")] for row in rows}


def _outcomes(root: Path, target: str) -> dict[str, Any]:
    """Per method and fold: C-index and the test hazards (by patient)."""
    from steph.fileio import read_json
    from steph.layout import ProjectLayout

    layout = ProjectLayout(root)
    out: dict[str, Any] = {}
    for method in layout.result_methods(target):
        for fold in layout.result_folds(target, method):
            metrics = layout.result_metrics(target, method, fold)
            preds = layout.predictions(target, method, fold)
            if not (metrics.is_file() and preds.is_file()):
                continue
            out[f"{method}/fold_{fold}"] = {
                "c_index": read_json(metrics).get("c_index"),
                "hazards": _read_predictions(preds),
            }
    return out


def _say(start: float, what: str) -> None:
    """One progress line on stderr (a time-boxed GPU session still shows how far it got)."""
    print(f"[{time.perf_counter() - start:6.1f} s] {what}", file=sys.stderr, flush=True)


def _run_pipeline(root: Path, precision: str, device: str, t0: float) -> dict[str, float]:
    """train-source, task-vector and merge as the demo runs them; seconds per stage."""
    import torch

    from steph import demo
    from steph.stages import (
        MergeSelection,
        TaskVectorSelection,
        TrainSourceSelection,
        open_project,
    )
    from steph.stages import run as run_stage

    project = open_project(root, {"train.precision": precision, "train.device": device})
    seconds: dict[str, float] = {}
    selections = (
        ("train-source", TrainSourceSelection()),
        ("task-vector", TaskVectorSelection()),
        ("merge", MergeSelection(target=demo.TARGET, methods=list(demo.METHODS))),
    )
    for name, selection in selections:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        report = run_stage(project, selection)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds[name] = round(time.perf_counter() - start, 2)
        _say(t0, f"{precision}: {name} {seconds[name]} s")
        if not report.ok:
            raise RuntimeError(f"{name} failed under {precision}: {report.to_dict()}")
    return seconds


def _compare(reference: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    hazard_diff, c_diff = 0.0, 0.0
    for key, ref in reference.items():
        got = other.get(key)
        if got is None:
            continue
        if ref["c_index"] is not None and got["c_index"] is not None:
            c_diff = max(c_diff, abs(ref["c_index"] - got["c_index"]))
        for pid, hazards in ref["hazards"].items():
            hazard_diff = max(
                hazard_diff, *(abs(a - b) for a, b in zip(hazards, got["hazards"][pid], strict=True))
            )
    return {"max_abs_hazard_diff": hazard_diff, "max_abs_c_index_diff": round(c_diff, 4)}


def run(
    quick: bool = False,
    *,
    device: str | None = None,
    precisions: list[str] | None = None,
    work: Path | None = None,
    out: Path | None = None,
    prepared: Path | None = None,
) -> dict[str, Any]:
    """The comparison (``benchmarks/run.py`` calls ``run(quick)``: the first CUDA device when
    there is one, else the CPU, where every precision runs fp32). With ``out``, the result so
    far is written there after the preparation and after each precision. ``prepared``: a demo
    project already generated and extracted (the ``demo`` folder of an earlier ``--work``; its
    slides may be left out), copied instead of generating and extracting: on a lent GPU that
    saves the 2 minutes the full cohort takes to make."""
    import torch

    from steph import demo
    from steph.stages import ExtractSelection, open_project
    from steph.stages import run as run_stage

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    precisions = list(precisions or ["fp32", "bf16"])

    base = Path(work or tempfile.mkdtemp(prefix="bench-precision-")) / "demo"
    start = time.perf_counter()
    if prepared is not None:
        shutil.copytree(prepared, base)
        _say(start, f"prepared demo project copied from {prepared}")
    else:
        demo.run_demo(base, quick=quick, only_generate=True)
        _say(start, "demo cohort generated")
        extract = run_stage(open_project(base, {"train.device": device}), ExtractSelection())
        if not extract.ok:
            raise RuntimeError(f"extract failed: {extract.to_dict()}")
        _say(start, "features extracted")
    result: dict[str, Any] = {
        "device": device,
        "device_name": _device_name(device),
        "demo": "quick" if quick else "full",
        "prepared": str(prepared) if prepared is not None else None,
        "prepare_s": round(time.perf_counter() - start, 1),
        "runs": {},
    }
    _save(out, result)
    outcomes: dict[str, Any] = {}
    for precision in precisions:
        copy = base.parent / f"demo-{precision}"
        shutil.copytree(base, copy)
        seconds = _run_pipeline(copy, precision, device, start)
        outcomes[precision] = _outcomes(copy, demo.TARGET)
        result["runs"][precision] = {
            "seconds": seconds,
            "c_index": {k: v["c_index"] for k, v in outcomes[precision].items()},
        }
        if precision != precisions[0]:
            result["runs"][precision][f"vs_{precisions[0]}"] = _compare(
                outcomes[precisions[0]], outcomes[precision]
            )
        _save(out, result)
    return result


def _save(out: Path | None, result: dict[str, Any]) -> None:
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cuda or cpu (default: cuda when there is one)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--quick", action="store_true", help="the quick demo cohort")
    parser.add_argument("--work", type=Path, help="folder for the projects (default: a temp folder)")
    parser.add_argument("--out", type=Path, help="also write the JSON here (after each precision too)")
    parser.add_argument(
        "--prepared", type=Path, help="a generated and extracted demo project to copy (skips making one)"
    )
    args = parser.parse_args(argv)
    result = run(
        args.quick,
        device=args.device,
        precisions=args.precisions,
        work=args.work,
        out=args.out,
        prepared=args.prepared,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
