"""train-source at real scale: the stage as users run it against the reference's one-bag loop
and the bare unpadded compute, on heavy-tailed bags; streaming; one 100,000-patch bag.

Figures (see ``benchmarks/realscale.py`` for how each is measured):

- ``heavy`` (default cohort: bag sizes log-normal around 1,500 patches, sd(log) 0.8, clipped to
  150..12,000; D = 1536; ABMIL 512/384): wall time and peak RSS of ``stephctl train-source``
  (whole process), of the one-bag-per-forward loop, and the bare unpadded compute, in
  alternating rounds. Targets (>= 4 epochs): stage / bare <= 1.10; stage / one-bag <= 1.0 in
  wall time and in peak RSS.
- ``equal``: the same with every bag 1,500 patches (second row).
- ``streaming``: seconds per epoch of ``fit`` over the bag store cached in memory and streamed
  from HDF5 (``train.cache_gb = 0``), alternating, each fit as many epochs as the stage rows
  (the best epoch kept: the loader reads each epoch's first batch during the previous epoch);
  target streamed / cached <= 1.1.
- ``huge_bag``: one optimiser step and a prediction on a single 100,000 x 1536 bag, with the
  automatic patch budget and (for contrast) the whole bag in one forward; peak RSS of each.
- ``per_patch``: measured seconds per patch (forward+backward, and forward only) for costing.

Run ``python -m benchmarks.bench_train [--quick] [--epochs 4] [--rounds 2] [--no-equal]
[--profile DIR]`` (``--profile``: after the race, the stage and the one-bag loop once more, traced with
cProfile and an RSS timeline, into ``DIR``; see ``benchmarks/tracing.py``); prints one JSON document (also ``run(quick)`` for ``benchmarks/run.py``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import realscale as rs

QUICK = rs.Cohort(patients=48, source_patients=12, dim=384, median=600, clip=(60, 4000), equal=600)


def stage_row(
    cohort: rs.Cohort, *, epochs: int, rounds: int, streaming: bool, profile: Path | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp) / "project"
        shape = rs.make_project(root, cohort)
        setup = ["train-source", "--cancer", rs.TARGET, "--fold", str(rs.FOLD), "--device", rs.DEVICE]
        rs.measure_rss(rs.stephctl(root, *setup, "--epochs", "0"))  # theta0 for the workers
        commands = {
            "stage": rs.stephctl(root, *setup, "--epochs", str(epochs), "--overwrite"),
            "one_bag": rs.worker("one_bag", root, "train", epochs),
            "bare": rs.worker("bare", root, "train", epochs),
        }
        load_before = rs.load_average()
        peak = rs.hardware_peak()
        race = rs.race(commands, rounds)
        row: dict[str, Any] = {
            "cohort": shape,
            "epochs": epochs,
            "rounds": rounds,
            "load_average": [load_before, rs.load_average()],
            **race,
            "ratios": rs.ratios(race["best"]),
            "peak": peak,
            "arithmetic": rs.arithmetic(race["best"], peak),
        }
        if profile is not None:
            row["profile"] = rs.profile(commands, ("stage", "one_bag"), profile)
        if streaming:
            row["streaming"] = time_streaming(root, rounds=2, epochs=epochs)
    return row


def time_streaming(root: Path, *, rounds: int, epochs: int = 1) -> dict[str, Any]:
    """Seconds per epoch of ``fit`` (``epochs`` per fit) with the cohort cached vs streamed from
    HDF5, alternating (wall and CPU seconds; the page cache holds the files, as on a local disk
    read twice)."""
    import torch

    from steph.config import load_project
    from steph.data import load_cohort, load_split, open_bags
    from steph.models.abmil import create_abmil
    from steph.training.loop import FitSettings, fit

    layout, config = load_project(root, {"train.epochs": epochs, "train.device": rs.DEVICE})
    _, streamed_config = load_project(root, {"train.epochs": epochs, "train.cache_gb": 0})
    cohort = load_cohort(layout, config, rs.TARGET)
    split = load_split(layout, cohort, rs.FOLD)
    data = cohort.targets(split.train, config.model)
    stores = {
        "cached": open_bags(layout, config, cohort, list(split.train)),
        "streamed": open_bags(layout, streamed_config, cohort, list(split.train)),
    }
    assert stores["streamed"].n_cached == 0
    epochs_s: dict[str, list[float]] = {"cached": [], "streamed": []}
    cpu_s: dict[str, list[float]] = {"cached": [], "streamed": []}
    for r in range(rounds):
        for name in ["cached", "streamed"] if r % 2 == 0 else ["streamed", "cached"]:
            torch.manual_seed(0)
            model = create_abmil(stores[name].dim, config.model)
            stamps = [(time.perf_counter(), time.process_time())]

            def stamp(*_: object, into: list[tuple[float, float]] = stamps) -> None:
                rs._sync()
                into.append((time.perf_counter(), time.process_time()))

            fit(
                model,
                data,
                stores[name],
                FitSettings.from_train(config.train),
                device=torch.device(rs.DEVICE),
                on_epoch=stamp,
            )
            epochs_s[name] += [b[0] - a[0] for a, b in itertools.pairwise(stamps)]
            cpu_s[name] += [b[1] - a[1] for a, b in itertools.pairwise(stamps)]
    best = {k: min(v) for k, v in epochs_s.items()}
    best_cpu = {k: min(v) for k, v in cpu_s.items()}
    return {
        "epoch_s": {k: [round(t, 2) for t in v] for k, v in epochs_s.items()},
        "epoch_cpu_s": {k: [round(t, 2) for t in v] for k, v in cpu_s.items()},
        "streamed_over_cached_wall": round(best["streamed"] / best["cached"], 3),
        "streamed_over_cached_cpu": round(best_cpu["streamed"] / best_cpu["cached"], 3),
    }


def huge_bag(patches: int, dim: int, *, contrast: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"patches": patches, "dim": dim}
    rs.warm_bytecode()
    budgets = {"auto": 0, "whole_bag": -1} if contrast else {"auto": 0}
    for stage in ("train", "merge"):
        for name, budget in budgets.items():
            cmd = [*rs.worker("huge", Path("-"), stage, patches)[:-1], str(patches), str(dim), str(budget)]
            out[f"{stage}_{name}"] = rs.measure_rss(cmd)
    return out


def run(
    quick: bool = False,
    *,
    epochs: int | None = None,
    rounds: int | None = None,
    equal: bool | None = None,
    huge_patches: int | None = None,
    patients: int | None = None,
    parts: tuple[str, ...] = ("rows", "huge"),
    profile: Path | None = None,
) -> dict[str, Any]:
    cohort = QUICK if quick else rs.Cohort()
    if patients:
        cohort = rs.Cohort(**{**cohort.__dict__, "patients": patients})
    epochs = epochs or (2 if quick else 4)
    rounds = rounds or 1
    equal = (not quick) if equal is None else equal
    result: dict[str, Any] = {"stage": "train-source", "targets": {"epochs_at_least": 4}}
    if "huge" in parts:
        patches = huge_patches or (20_000 if quick else 100_000)
        result["huge_bag"] = huge_bag(patches, cohort.dim, contrast=not quick)
    if "rows" not in parts:
        return result
    result["heavy"] = stage_row(cohort, epochs=epochs, rounds=rounds, streaming=True, profile=profile)
    if equal:
        flat = rs.Cohort(**{**cohort.__dict__, "median": 0.0})
        result["equal"] = stage_row(flat, epochs=epochs, rounds=1, streaming=False)
    result["per_patch"] = rs.per_patch(result["heavy"])
    r = result["heavy"]["ratios"]
    stream = result["heavy"]["streaming"]
    result["targets_met"] = {
        **rs.targets_met(r, epochs),
        "streamed_over_cached<=1.1 (wall)": stream["streamed_over_cached_wall"] <= 1.1,
        "streamed_over_cached<=1.1 (cpu)": stream["streamed_over_cached_cpu"] <= 1.1,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="48 patients, D=384, median 600, 2 epochs")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--no-equal", action="store_true", help="skip the equal-size row")
    parser.add_argument("--huge-patches", type=int, help="patches of the single huge bag (100,000)")
    parser.add_argument("--patients", type=int, help="patients of the generated cancer (default 48)")
    parser.add_argument(
        "--only", choices=("rows", "huge"), help="only the stage rows, or only the 100k-patch bag"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: every figure on it")
    parser.add_argument(
        "--profile",
        type=Path,
        help="then one traced run (cProfile, RSS timeline) each of the stage and the one-bag loop, into this folder",
    )
    args = parser.parse_args()
    rs.set_device(args.device)
    result = run(
        args.quick,
        epochs=args.epochs,
        rounds=args.rounds,
        equal=False if args.no_equal else None,
        huge_patches=args.huge_patches,
        patients=args.patients,
        parts=(args.only,) if args.only else ("rows", "huge"),
        profile=args.profile,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
