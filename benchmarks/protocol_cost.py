"""The paper's whole protocol as a cost model fed by measured figures: processes, bytes, arithmetic.

Protocol (the paper, docs/reproduce.md): 13 TCGA cancers, 7,268 patients, 5 folds, 20 epochs,
batches of 16, 80 % of each cancer's patients in a fold's training split, 12 sources a target.

- train-source: every cancer x fold trains on its training split and predicts all its patients;
- merge: every target x fold x row of the paper's comparison set (``merge --paper``,
  :data:`steph.merging.paper.PAPER_VARIANTS`) trains on the target's training split and predicts
  its patients.

Arithmetic is counted analytically (:mod:`steph.models.flops`, matrix products) over the
heavy-tailed bag sizes of the benchmarks (mean from :func:`mean_bag`), D = 1536 and the reference
widths. Time is then, for a way of running it:

    processes x start-up  +  bytes read / read rate  +  FLOPs / achieved FLOP rate
        +  sum over training steps of max(0, host time of the step - its arithmetic)

with the start-up, read rate and achieved rate measured (``bench_train.py`` / ``bench_merge.py``
JSON: ``ratios.bare_fixed_wall_s``, ``arithmetic.bare_gflops``, ``peak``) or given as options.
The last term is for a device that computes while the host queues the next operators (a GPU):
a 16-bag step then takes the longer of the training thread's time (Python, dispatch, launches)
and its arithmetic. The host's time per step comes from ``bench_host.py``'s JSON (the training
thread's CPU time per bag of the packs path at 16 bags, times 16, per model: ``--host-json``)
or ``--host-ms-per-step``; without either the term is left out (on a CPU the measured rate
already holds the host's time). Rows that train a head over a frozen encoder (model averaging)
take train-source's figure and STEPH's ablations STEPH's, both upper bounds (fewer operators).
Two ways are costed: one process per unit (a cancer x fold, a target x method x fold: what Slurm
arrays of one unit per task do) and one process per cancer or target (every fold and method of
it, features read once). Each is given for one device and for a node of ``--gpus`` devices (units
spread evenly), next to the floor: the analytic FLOPs at 25 % and 40 % of the measured peak.

    python -m benchmarks.protocol_cost [TRAIN_JSON MERGE_JSON] [--rate-gflops R] [--peak-gflops P]
        [--process-s S] [--read-gbps G] [--gpus 8] [--host-json HOST_JSON | --host-ms-per-step MS]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from steph.merging.paper import PAPER_VARIANTS
from steph.models import flops

PATIENTS = 7268
CANCERS = 13
FOLDS = 5
EPOCHS = 20
TRAIN_FRACTION = 0.8
SOURCES = 12
DIM = 1536
FEATURE_BYTES = 2
"""Bytes per feature value of the published UNI2-h-DSS features (bf16); stephctl extract writes 4."""
BATCH = 16
HOST_MODEL = {
    "abmil": "train-source",
    "forward": "train-source",
    "steph": "steph",
    "roupkt": "roupkt",
    "adamerging": "adamerging",
    "adamerging-hypernet": "adamerging",
}
"""The ``bench_host`` model whose host time per step prices a cost class's steps."""
HOST_MODELS = sorted(set(HOST_MODEL.values()))


def mean_bag(median: float = 1500.0, spread: float = 0.8, lo: int = 150, hi: int = 12_000) -> float:
    """Mean of ``clip(median * exp(spread * N(0, 1)), lo, hi)`` (numerical integration)."""
    n = 20_000
    total = 0.0
    for i in range(n):
        z = -8.0 + 16.0 * (i + 0.5) / n
        total += min(hi, max(lo, median * math.exp(spread * z))) * math.exp(-z * z / 2)
    return total * (16.0 / n) / math.sqrt(2 * math.pi)


def kind(method: str, overrides: dict[str, Any]) -> str:
    """The cost class of a comparison-set row."""
    if method == "steph":
        return "steph"
    if method == "roupkt":
        return "roupkt"
    if method.endswith("adamerging"):
        return "adamerging-hypernet" if overrides.get("hypernet") else "adamerging"
    return "forward"


def unit_flops(cost_kind: str, bag: float, w: flops.Widths) -> tuple[float, float, float]:
    """``(train_step, once_per_patient, predict)`` FLOPs of one bag of ``bag`` patches for a cost
    class; ``once_per_patient``: what training computes once per patient, not every epoch
    (ROUPKT's frozen experts, :mod:`steph.training.memo`)."""
    k = round(bag)
    if cost_kind == "abmil":
        return flops.abmil_step(k, w), 0, flops.abmil_forward(k, w)
    if cost_kind == "steph":
        return flops.steph_step(k, w, SOURCES), 0, flops.steph_forward(k, w, SOURCES)
    if cost_kind == "roupkt":
        step = flops.roupkt_step(k, w, SOURCES, experts=False)
        return step, flops.roupkt_experts(k, w, SOURCES), flops.roupkt_forward(k, w, SOURCES)
    if cost_kind.startswith("adamerging"):
        step, fwd = flops.adamerging_step(k, w, SOURCES, 16), flops.adamerging_forward(k, w, SOURCES, 16)
        if cost_kind == "adamerging-hypernet":  # the hypernetwork's patch embedding, forward + weights
            step, fwd = step + 4 * k * w.dim_in * w.dim_emb, fwd + 2 * k * w.dim_in * w.dim_emb
        return step, 0, fwd
    fwd = flops.abmil_forward(k, w)  # data-free merges: a frozen encoder, a trained head
    return fwd, 0, fwd


def work(
    cost_kind: str,
    patients: float,
    bag: float,
    w: flops.Widths,
    *,
    epochs: int = EPOCHS,
    folds: int = FOLDS,
    train_fraction: float = TRAIN_FRACTION,
) -> float:
    """Analytic FLOPs of one cost class over every fold of a cohort of ``patients`` (bags of
    ``bag`` patches): each fold trains ``epochs`` on its training split (``train_fraction``) and
    predicts every patient. The per-patient constants (``once``) are computed once per training
    patient in training, and the training patients' predictions read them (the unit's bag memo
    spans training and predictions), so they cost a test patient's forward less ``once``:

        epochs T step + T once + T (fwd - once) + (P - T) fwd = epochs T step + P fwd"""
    step, _once, fwd = unit_flops(cost_kind, bag, w)
    train_patients = folds * train_fraction * patients
    return epochs * train_patients * step + folds * patients * fwd


def steps(
    patients: float, *, epochs: int = EPOCHS, folds: int = FOLDS, train_fraction: float = TRAIN_FRACTION
) -> float:
    """Optimiser steps of one cost class over every fold of a cohort of ``patients`` (batches of
    :data:`BATCH`, the last partial batch dropped, as ``fit`` does)."""
    return folds * epochs * math.floor(train_fraction * patients / BATCH)


def protocol(bag: float) -> dict[str, Any]:
    """Units, analytic FLOPs, training steps (with each class's arithmetic per step) and feature
    bytes of the protocol."""
    w = flops.Widths(DIM)
    classes = {"train-source": "abmil"}  # summed over cancers (or targets)
    classes.update({f"merge {v.label}": kind(v.method, v.overrides) for v in PAPER_VARIANTS})
    per_cancer = PATIENTS / CANCERS
    return {
        "mean_bag_patches": round(bag),
        "units": {"train-source": CANCERS * FOLDS, "merge": CANCERS * FOLDS * len(PAPER_VARIANTS)},
        "flops": {stage: work(c, PATIENTS, bag, w) for stage, c in classes.items()},
        "classes": classes,
        "steps": {stage: CANCERS * steps(per_cancer) for stage in classes},
        "step_flops": {stage: BATCH * unit_flops(c, bag, w)[0] for stage, c in classes.items()},
        "feature_bytes": PATIENTS * bag * DIM * FEATURE_BYTES,
    }


def host_excess(p: dict[str, Any], host_s: dict[str, float], rate: float) -> float:
    """Seconds the host adds over the arithmetic: per stage, its steps times ``max(0, host time
    of a step - the step's FLOPs / rate)`` (``host_s``: seconds per step of each ``bench_host``
    model, :data:`HOST_MODEL`)."""
    total = 0.0
    for stage, cost_kind in p["classes"].items():
        host = host_s.get(HOST_MODEL[cost_kind], 0.0)
        total += p["steps"][stage] * max(0.0, host - p["step_flops"][stage] / rate)
    return total


def schedule(
    p: dict[str, Any],
    *,
    rate: float,
    process_s: float,
    read_bps: float,
    devices: int,
    host_s: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Hours of the protocol run one process per unit and one process per cancer/target, on
    ``devices`` devices (units spread evenly, each device one process at a time); ``host_s``:
    the host's seconds per training step of each ``bench_host`` model (see :func:`host_excess`)."""
    total_flops = sum(p["flops"].values())
    arithmetic = total_flops / rate
    host = host_excess(p, host_s, rate) if host_s else 0.0
    units = p["units"]["train-source"] + p["units"]["merge"]
    ways = {
        # every train-source unit reads its cancer; every merge unit reads its target
        "one_process_per_unit": (units, FOLDS + FOLDS * len(PAPER_VARIANTS)),
        # one process per cancer (all folds) and one per target (all folds and methods)
        "one_process_per_cancer_or_target": (2 * CANCERS, 2),
    }
    out: dict[str, Any] = {}
    for name, (processes, passes) in ways.items():
        start = processes * process_s
        reading = passes * p["feature_bytes"] / read_bps
        seconds = (start + reading + arithmetic + host) / devices
        out[name] = {
            "processes": processes,
            "start_up_h": round(start / devices / 3600, 3),
            "reading_h": round(reading / devices / 3600, 3),
            "arithmetic_h": round(arithmetic / devices / 3600, 3),
            "host_over_arithmetic_h": round(host / devices / 3600, 3),
            "total_h": round(seconds / 3600, 3),
            "total_min": round(seconds / 60, 1),
        }
    return out


def model(
    *,
    rate_gflops: float,
    peak_gflops: float,
    process_s: float,
    read_gbps: float,
    gpus: int,
    bag: float | None = None,
    host_ms_per_step: dict[str, float] | None = None,
) -> dict[str, Any]:
    p = protocol(bag if bag is not None else mean_bag())
    total = sum(p["flops"].values())
    host_s = {k: v / 1e3 for k, v in host_ms_per_step.items()} if host_ms_per_step else None
    kwargs = {
        "rate": rate_gflops * 1e9,
        "process_s": process_s,
        "read_bps": read_gbps * 1e9,
        "host_s": host_s,
    }
    rate = rate_gflops * 1e9
    return {
        "inputs": {
            "achieved_gflops": rate_gflops,
            "peak_gflops": peak_gflops,
            "process_start_s": process_s,
            "read_gb_per_s": read_gbps,
            **({"host_ms_per_step": host_ms_per_step} if host_ms_per_step else {}),
        },
        "mean_bag_patches": p["mean_bag_patches"],
        "units": p["units"],
        "training_steps": round(sum(p["steps"].values())),
        "arithmetic_ms_per_step": {stage: round(f / rate * 1e3, 3) for stage, f in p["step_flops"].items()},
        "analytic_pflop": {k: round(v / 1e15, 2) for k, v in p["flops"].items()},
        "analytic_pflop_total": round(total / 1e15, 1),
        "feature_gb": round(p["feature_bytes"] / 1e9, 1),
        "floor_min": {
            "at_25pct_of_peak": round(total / (0.25 * peak_gflops * 1e9) / 60, 1),
            "at_40pct_of_peak": round(total / (0.40 * peak_gflops * 1e9) / 60, 1),
        },
        "one_device": schedule(p, devices=1, **kwargs),
        f"{gpus}_devices": schedule(p, devices=gpus, **kwargs),
    }


def measured_inputs(train_json: Path | None, merge_json: Path | None) -> dict[str, float]:
    """Achieved rate (the lower of train-source's and merge's bare compute), peak and start-up
    from the benchmark outputs."""
    found: dict[str, float] = {}
    rows = []
    for path in (train_json, merge_json):
        if path is None:
            continue
        doc = json.loads(path.read_text())
        doc = next(iter(doc.get("benchmarks", {}).values()), {}).get("figures", doc)
        row = doc.get("heavy") or doc.get("stage", {}).get("heavy") or doc.get("stage") or doc
        rows.append(row)
    rates = [r["arithmetic"]["bare_gflops"] for r in rows if "arithmetic" in r]
    peaks = [r["peak"].get("bf16_gflops", r["peak"]["fp32_gflops"]) for r in rows if "peak" in r]
    fixed = [r["ratios"]["bare_fixed_wall_s"] for r in rows if "ratios" in r]
    if rates:
        found["rate_gflops"] = min(rates)
    if peaks:
        found["peak_gflops"] = max(peaks)
    if fixed:
        found["process_s"] = max(fixed)
    return found


def host_figures(path: Path) -> dict[str, float]:
    """Milliseconds of host time per 16-bag step, per model, from ``bench_host.py``'s JSON: the
    training thread's CPU time per bag on the packs path at 16 bags, times 16."""
    doc = json.loads(path.read_text())
    doc = next(iter(doc.get("benchmarks", {}).values()), {}).get("figures", doc)
    return {
        name: round(doc[name]["packs_16"]["cpu_us_per_bag"] * BATCH / 1e3, 3)
        for name in HOST_MODELS
        if name in doc
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_json", type=Path, nargs="?", help="output of bench_train.py")
    parser.add_argument("merge_json", type=Path, nargs="?", help="output of bench_merge.py")
    parser.add_argument("--rate-gflops", type=float, help="achieved arithmetic rate (default: measured)")
    parser.add_argument("--peak-gflops", type=float, help="the device's dense peak (default: measured)")
    parser.add_argument("--process-s", type=float, help="start-up of one process, s (default: measured)")
    parser.add_argument(
        "--read-gbps", type=float, default=2.0, help="feature read rate, GB/s (local NVMe: 2)"
    )
    parser.add_argument("--gpus", type=int, default=8, help="devices of one node (8)")
    host = parser.add_mutually_exclusive_group()
    host.add_argument("--host-json", type=Path, help="output of bench_host.py: host time per step")
    host.add_argument("--host-ms-per-step", type=float, help="host time of every 16-bag training step, ms")
    args = parser.parse_args(argv)
    measured = measured_inputs(args.train_json, args.merge_json)
    values = {
        "rate_gflops": args.rate_gflops or measured.get("rate_gflops"),
        "peak_gflops": args.peak_gflops or measured.get("peak_gflops"),
        "process_s": args.process_s or measured.get("process_s"),
    }
    missing = [k.replace("_", "-") for k, v in values.items() if v is None]
    if missing:
        parser.error(f"give --{', --'.join(missing)} or benchmark JSON files that measured them")
    host_ms = None
    if args.host_json:
        host_ms = host_figures(args.host_json)
    elif args.host_ms_per_step:
        host_ms = dict.fromkeys(HOST_MODELS, args.host_ms_per_step)
    result = model(
        read_gbps=args.read_gbps,
        gpus=args.gpus,
        host_ms_per_step=host_ms,
        **values,  # type: ignore[arg-type]
    )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
