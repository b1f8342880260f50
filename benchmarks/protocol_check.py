"""The protocol's cost model checked end to end: one BRCA-sized target's share of the protocol.

:mod:`benchmarks.protocol_cost` prices the paper's protocol from figures measured on the 48-bag
benchmarks. This script checks that price on work shaped like the protocol's own: it generates a
project (features level, D = 1536, heavy-tailed bags as the benchmarks', see
:mod:`benchmarks.realscale`) with a target of ``--patients`` (1,000: BRCA's size in TCGA) and the
other 12 TCGA cancers of ``--source-patients`` each, then runs as users run them, one process per
stage, each timed from outside (wall, CPU and peak RSS through ``os.wait4``):

1. ``stephctl train-source`` (every cancer x 5 folds),
2. ``stephctl task-vector``,
3. ``stephctl merge --target BRCA --paper`` (the paper's comparison set x 5 folds).

The same work is priced with the cost model: one process start-up and one read of the stage's
features, plus the analytic FLOPs of exactly these cohorts (each cancer's own mean bag, every
fold, ``--epochs``) at the achieved rate of ``bench_train``/``bench_merge`` JSON files (or
``--rate-gflops`` and ``--process-s``; without them only the measured side and the analytic
FLOPs are printed, to be priced later with :mod:`benchmarks.protocol_cost`). Printed (JSON): per stage the measured and predicted seconds and their ratio,
the achieved FLOP rate of the whole run and its fraction of the peak; then the protocol's total
on one device as the model prices it, and that total times the run's measured / predicted ratio.
With ``--host-json`` (``bench_host.py``'s output on the same device) the protocol's total also
holds the host's time per training step where it exceeds the step's arithmetic
(:func:`benchmarks.protocol_cost.host_excess`).

    python -m benchmarks.protocol_check [TRAIN_JSON MERGE_JSON] [--device cuda] [--patients 1000]
        [--source-patients 120] [--epochs 20] [--host-json HOST_JSON] [--work DIR] [--out FILE]
    python -m benchmarks.protocol_check --quick          # D = 64, small bags: a dry run on CPU

Generating the features costs time and disk: 1,000 BRCA patients at D = 1536 are about 12.6 GB
(fp32) and take a few minutes to write; 12 sources of 120 patients add 18 GB.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import protocol_cost as pc
from benchmarks import realscale as rs
from steph.merging.paper import PAPER_VARIANTS
from steph.models import flops

TARGET = "BRCA"


def generate(root: Path, *, patients: int, source_patients: int, dim: int, quick: bool) -> dict[str, Any]:
    """The project: the target and the 12 other TCGA cancers; returns each cancer's patients,
    mean bag and feature bytes."""
    from steph.data.features import feature_shape
    from steph.synthetic import TCGA_CANCERS, generate_cohort
    from steph.synthetic.cohort import FeatureSpec, standard_spec

    shape = rs.Cohort()  # the benchmarks' heavy-tailed bags
    median, clip = (60.0, (10, 200)) if quick else (shape.median, shape.clip)
    features = FeatureSpec(dim=dim, patches=clip, size_median=median, size_spread=shape.spread)
    spec = standard_spec(
        cancers=TCGA_CANCERS,
        target=TARGET,
        target_patients=patients,
        source_patients=(source_patients, source_patients),
        features=features,
    )
    start = time.perf_counter()
    generate_cohort(root, spec, level="features", encoder="uni2-h-synthetic")
    written = time.perf_counter() - start
    cancers: dict[str, Any] = {}
    for cancer in TCGA_CANCERS:
        files = rs.patient_feature_files(root, cancer)
        patches = sum(feature_shape(path)[0] for paths in files.values() for path in paths)
        cancers[cancer] = {
            "patients": len(files),
            "mean_bag": round(patches / len(files), 1),  # a patient's bag: all its slides
            "feature_bytes": patches * dim * 4,
        }
    return {"cancers": cancers, "write_s": round(written, 1)}


def predicted(
    cohort: dict[str, Any],
    *,
    dim: int,
    epochs: int,
    rate: float | None,
    process_s: float | None,
    read_bps: float,
) -> dict[str, dict[str, Any]]:
    """The analytic FLOPs and feature bytes of each stage of this run and the cost model's
    seconds for it (task-vector: start-up only; None without a rate and a start-up time)."""
    w = flops.Widths(dim)
    cancers = cohort["cancers"]
    target = cancers[TARGET]
    train = sum(pc.work("abmil", c["patients"], c["mean_bag"], w, epochs=epochs) for c in cancers.values())
    merge = sum(
        pc.work(pc.kind(v.method, v.overrides), target["patients"], target["mean_bag"], w, epochs=epochs)
        for v in PAPER_VARIANTS
    )
    stages = {
        "train-source": (train, sum(c["feature_bytes"] for c in cancers.values())),
        "task-vector": (0.0, 0),
        "merge": (merge, target["feature_bytes"]),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, (flop, read) in stages.items():
        seconds = None
        if rate is not None and process_s is not None:
            seconds = round(process_s + read / read_bps + flop / rate, 1)
        out[name] = {"analytic_flop": flop, "read_gb": round(read / 1e9, 2), "predicted_s": seconds}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    rs.set_device(args.device)
    dim = 64 if args.quick else args.dim
    patients = 40 if args.quick else args.patients
    source_patients = 20 if args.quick else args.source_patients
    epochs = 1 if args.quick else args.epochs
    measured = pc.measured_inputs(args.train_json, args.merge_json)
    rate = args.rate_gflops or measured.get("rate_gflops")
    peak = args.peak_gflops or measured.get("peak_gflops")
    process_s = args.process_s or measured.get("process_s")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="protocol-check-"))
    root = work / "project"
    cohort = generate(root, patients=patients, source_patients=source_patients, dim=dim, quick=args.quick)
    rs.warm_bytecode()
    device = ["--device", args.device]
    commands = {
        "train-source": rs.stephctl(root, "train-source", "--epochs", str(epochs), *device),
        "task-vector": rs.stephctl(root, "task-vector"),
        "merge": rs.stephctl(root, "merge", "--target", TARGET, "--paper", "--epochs", str(epochs), *device),
    }
    runs = {name: rs.measure_rss(cmd) for name, cmd in commands.items()}
    rate_flops = rate * 1e9 if rate is not None else None
    model = predicted(
        cohort, dim=dim, epochs=epochs, rate=rate_flops, process_s=process_s, read_bps=args.read_gbps * 1e9
    )
    stages: dict[str, Any] = {}
    for name in commands:
        stage = {**runs[name], **model[name], "analytic_tflop": round(model[name]["analytic_flop"] / 1e12, 3)}
        del stage["analytic_flop"]
        if model[name]["predicted_s"]:
            stage["measured_over_predicted"] = round(runs[name]["wall_s"] / model[name]["predicted_s"], 3)
        stages[name] = stage
    wall = sum(r["wall_s"] for r in runs.values())
    flop = sum(m["analytic_flop"] for m in model.values())
    total: dict[str, Any] = {"wall_s": round(wall, 1), "achieved_gflops": round(flop / wall / 1e9, 1)}
    if peak:
        total["fraction_of_peak"] = round(flop / wall / 1e9 / peak, 4)
    protocol = None
    if rate is not None and process_s is not None:
        ratio = wall / sum(m["predicted_s"] for m in model.values())
        total["measured_over_predicted"] = round(ratio, 3)
        host = pc.host_figures(args.host_json) if args.host_json else None
        priced = pc.model(
            rate_gflops=rate,
            peak_gflops=peak or rate,
            process_s=process_s,
            read_gbps=args.read_gbps,
            gpus=8,
            host_ms_per_step=host,
        )
        one = priced["one_device"]["one_process_per_cancer_or_target"]
        minutes = one["total_min"]
        protocol = {
            "model_min": minutes,
            "model_times_measured_ratio_min": round(minutes * ratio, 1),
            "host_over_arithmetic_min": round(one["host_over_arithmetic_h"] * 60, 1),
            "host_ms_per_step": host,
        }
    return {
        "device": args.device,
        "load_average": rs.load_average(),
        "inputs": {
            "rate_gflops": rate,
            "peak_gflops": peak,
            "process_s": process_s,
            "read_gbps": args.read_gbps,
        },
        "cohort": {**cohort, "dim": dim, "epochs": epochs},
        "stages": stages,
        "total": total,
        "protocol_one_device": protocol,
        "work": str(work),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_json", type=Path, nargs="?", help="output of bench_train.py (rate, start-up)")
    parser.add_argument("merge_json", type=Path, nargs="?", help="output of bench_merge.py")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--patients", type=int, default=1000, help="patients of the target (1,000)")
    parser.add_argument("--source-patients", type=int, default=120, help="patients of each source (120)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--rate-gflops", type=float, help="achieved rate (default: from the JSON files)")
    parser.add_argument(
        "--peak-gflops", type=float, help="the device's dense peak (default: from the JSON files)"
    )
    parser.add_argument(
        "--process-s", type=float, help="start-up of one process (default: from the JSON files)"
    )
    parser.add_argument("--read-gbps", type=float, default=2.0, help="feature read rate, GB/s (2)")
    parser.add_argument(
        "--host-json", type=Path, help="output of bench_host.py on the device: host time per step"
    )
    parser.add_argument("--work", help="folder for the project (default: a new temporary folder)")
    parser.add_argument("--quick", action="store_true", help="D = 64, 40 + 12 x 20 patients, 1 epoch")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
