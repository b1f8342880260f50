"""Transfer benchmark: does knowledge from other cancers help a data-poor target?

For each value of the sharing knob (the correlation of the prognostic coefficients between
cancers, ``steph.synthetic.cohort``), a feature-level cohort of the 13 TCGA-named cancers is
generated with a data-poor target (BRCA) and richer sources. The pipeline then runs on it
exactly as a user would: train-source (target: every fold; sources: the fold merge takes them
from), task-vector, and merge for the target with task arithmetic, TIES, ROUPKT, STEPH and the
paper's STEPH ablations. Everything trained on the small target (its cancer-specific models and
every merge) runs ``target_epochs`` (60) instead of ``train.epochs`` (20), so that it takes about
as many optimiser steps as the source models do (docs/benchmarks.md explains why). The table reports the mean (sd) test C-index over the 5 target folds
of every method, the cancer-specific baseline and the oracle (the true risk on the same test
sets), plus the paired difference to cancer-specific.

    python -m benchmarks.transfer                 # the documented run (docs/benchmarks.md)
    python -m benchmarks.transfer --quick         # a tiny version (about a minute)
    python -m benchmarks.transfer --sharing 0 1 --seeds 0 1 2 --work /tmp/transfer

Writes ``transfer-<timestamp>.json`` and ``.md`` into ``--out-dir`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from steph.config import load_project
from steph.fileio import read_json
from steph.merging import MERGE_METHODS
from steph.pipeline.merge import merge_models, plan_merge
from steph.pipeline.task_vector import compute_task_vectors
from steph.pipeline.train_source import train_source_models
from steph.synthetic import TCGA_CANCERS, FeatureSpec, generate_cohort, standard_spec
from steph.synthetic.project import init_configured_project
from steph.synthetic.tables import oracle_fold_c_index

HERE = Path(__file__).resolve().parent
TARGET = "BRCA"
CANCER_SPECIFIC = "cancer-specific"


@dataclass(frozen=True)
class BenchSize:
    """Cohort and protocol of one benchmark size."""

    cancers: tuple[str, ...]
    target_patients: int
    source_patients: tuple[int, int]
    dim: int
    patches: tuple[int, int]
    phenotypes: int
    sharing: tuple[float, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    top_k: int | None = None
    """merge.top_k of the methods that read it (None = the default 5)."""
    target_epochs: int | None = None
    """Epochs of everything trained on the target (cancer-specific models and every merge);
    None = train.epochs. Sources always train train.epochs."""


FULL = BenchSize(
    cancers=TCGA_CANCERS,
    target_patients=150,
    source_patients=(300, 500),
    dim=64,
    patches=(32, 96),
    phenotypes=8,
    sharing=(0.0, 0.5, 1.0),
    overrides={"model.dim_emb": 64, "model.dim_attn": 32, "train.epochs": 20, "train.lr": 5e-4},
    target_epochs=60,
)
QUICK = BenchSize(
    cancers=("BLCA", "BRCA", "KIPAN", "LUNG"),
    target_patients=40,
    source_patients=(60, 80),
    dim=16,
    patches=(8, 24),
    phenotypes=8,
    sharing=(0.0, 1.0),
    overrides={"model.dim_emb": 16, "model.dim_attn": 8, "train.epochs": 2, "train.lr": 5e-4},
    top_k=2,
)

HYPERNET = {"merge.options.hypernet": True}

VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("Model Avg. (target head)", "model-avg", {}),
    ("task arithmetic (target head)", "task-arithmetic", {}),
    ("TIES (target head)", "ties", {}),
    ("AdaMerging", "adamerging", {}),
    ("AdaMerging + hypernetwork", "adamerging", HYPERNET),
    ("TIES AM", "ties-adamerging", {}),
    ("TIES AM + hypernetwork", "ties-adamerging", HYPERNET),
    ("Surgery AM", "surgery-adamerging", {}),
    ("Surgery AM + hypernetwork", "surgery-adamerging", HYPERNET),
    ("Iso-C AM", "iso-c-adamerging", {}),
    ("Iso-C AM + hypernetwork", "iso-c-adamerging", HYPERNET),
    ("ROUPKT", "roupkt", {}),
    ("STEPH", "steph", {}),
    ("STEPH, lambda = 0 (source vectors only)", "steph", {"merge.mix": "fixed", "merge.fixed_lambda": 0.0}),
    ("STEPH, lambda = 1 (target vector only)", "steph", {"merge.mix": "fixed", "merge.fixed_lambda": 1.0}),
    ("STEPH, lambda a global parameter", "steph", {"merge.mix": "global"}),
    ("STEPH, no sparsity (all sources)", "steph", {"merge.sparse": False}),
    ("STEPH, w a global parameter", "steph", {"merge.weights": "global"}),
)
"""(label, merge method, config overrides) of every merged model: the paper's comparison set
(``stephctl merge --paper``) plus task arithmetic and data-free TIES; ablations as the paper's ablation table (docs/merge.md,
"Ablations"). The fixed-weight merges keep the target model's own head, as the reference."""


def run_setting(root: Path, size: BenchSize, sharing: float, seed: int) -> dict[str, Any]:
    """Generate one cohort, run the pipeline, return per-fold C-indices of every method."""
    spec = standard_spec(
        cancers=size.cancers,
        target=TARGET,
        target_patients=size.target_patients,
        source_patients=size.source_patients,
        sharing=sharing,
        seed=seed,
        phenotypes=size.phenotypes,
        features=FeatureSpec(dim=size.dim, patches=size.patches),
    )
    layout = init_configured_project(
        root, cancers=spec.names, encoder="synthetic", overrides=size.overrides, note="transfer benchmark"
    )
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    _require(generate_cohort(root, spec, level="features"))
    seconds["generate"] = time.perf_counter() - clock
    _, config = load_project(root)
    on_target = {"train.epochs": size.target_epochs} if size.target_epochs else {}
    _, target_config = load_project(root, on_target)
    sources = [c for c in spec.names if c != TARGET]
    source_fold = [config.merge.source_fold]
    clock = time.perf_counter()
    _require(train_source_models(layout, target_config, cancers=[TARGET]))
    _require(train_source_models(layout, config, cancers=sources, folds=source_fold))
    _require(compute_task_vectors(layout, config, cancers=[TARGET]))
    _require(compute_task_vectors(layout, config, cancers=sources, folds=source_fold))
    seconds["train-source + task-vector"] = time.perf_counter() - clock
    methods: dict[str, Any] = {
        CANCER_SPECIFIC: {"run": CANCER_SPECIFIC, "folds": _fold_values(layout, CANCER_SPECIFIC)}
    }
    for label, method, overrides in VARIANTS:
        uses_top_k = (
            size.top_k is not None
            and "top_k" in MERGE_METHODS.get(method).setting_names()
            and overrides.get("merge.sparse", True)
        )
        top_k = {"merge.top_k": size.top_k} if uses_top_k else {}
        _, variant = load_project(root, {**on_target, **top_k, **overrides})
        run = plan_merge(layout, variant, target=TARGET, methods=[method])[0].params["run"]
        clock = time.perf_counter()
        _require(merge_models(layout, variant, target=TARGET, methods=[method]))
        seconds[f"merge {run}"] = time.perf_counter() - clock
        methods[label] = {"run": run, "folds": _fold_values(layout, run)}
    oracle = oracle_fold_c_index(layout, TARGET)
    cohort = read_json(layout.synthetic_spec)["cancers"]
    return {
        "sharing": sharing,
        "oracle": _summary(oracle),
        "methods": {label: {**entry, **_summary(entry["folds"])} for label, entry in methods.items()},
        "target": cohort[TARGET],
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def _require(report: Any) -> None:
    if not report.ok:
        failed = "; ".join(f"{item.key}: {item.message}" for item in report.failed[:3])
        raise RuntimeError(f"{report.stage} failed: {failed}")


def _fold_values(layout: Any, run: str) -> list[float]:
    values = []
    for fold in layout.result_folds(TARGET, run):
        value = read_json(layout.result_metrics(TARGET, run, fold)).get("c_index")
        values.append(float("nan") if value is None else float(value))
    return values


def _summary(values: list[float]) -> dict[str, Any]:
    clean = [v for v in values if v == v]
    return {
        "mean": statistics.fmean(clean) if clean else None,
        "sd": statistics.stdev(clean) if len(clean) > 1 else None,
        "values": values,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    """Two tables: mean (sd) C-index per method and sharing; paired gain over cancer-specific."""
    header = "| method | " + " | ".join(f"sharing {r['sharing']:g}" for r in results) + " |"
    rule = "|---|" + "---:|" * len(results)
    labels = list(results[0]["methods"])
    draws = len(results[0].get("seeds", [0]))
    lines = [f"Mean (sd) test C-index over the target's folds x {draws} cohort draw(s).", "", header, rule]
    for label in labels:
        cells = [_cell(r["methods"][label]) for r in results]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| *oracle (true risk)* | " + " | ".join(_cell(r["oracle"]) for r in results) + " |")
    lines += [
        "",
        "Paired difference to cancer-specific over the same folds: mean (folds won).",
        "",
        header,
        rule,
    ]
    for label in labels[1:]:
        cells = []
        for r in results:
            ours, base = r["methods"][label]["values"], r["methods"][CANCER_SPECIFIC]["values"]
            diffs = [a - b for a, b in zip(ours, base, strict=True)]
            wins = sum(d > 0 for d in diffs)
            cells.append(f"{statistics.fmean(diffs):+.4f} ({wins}/{len(diffs)})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(summary: dict[str, Any]) -> str:
    if summary["mean"] is None:
        return "n/a"
    sd = f" ({summary['sd']:.3f})" if summary["sd"] is not None else ""
    return f"{summary['mean']:.4f}{sd}"


def run_sharing(
    base: Path, size: BenchSize, sharing: float, seeds: tuple[int, ...], partial: Path | None = None
) -> dict[str, Any]:
    """One sharing value over several cohort draws; fold values are pooled seed by seed. Each
    finished draw is appended to ``partial`` (JSON lines) so an interrupted run shows its progress."""
    runs = []
    for seed in seeds:
        print(f"[transfer] sharing {sharing:g}, seed {seed} ...", file=sys.stderr, flush=True)
        runs.append(run_setting(base / f"sharing-{sharing:g}-seed-{seed}", size, sharing, seed))
        if partial is not None:
            with partial.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"sharing": sharing, "seed": seed, **runs[-1]}) + "\n")
    pooled = {
        label: {"run": entry["run"], **_summary([v for r in runs for v in r["methods"][label]["values"]])}
        for label, entry in runs[0]["methods"].items()
    }
    oracle = _summary([v for r in runs for v in r["oracle"]["values"]])
    return {"sharing": sharing, "seeds": list(seeds), "oracle": oracle, "methods": pooled, "runs": runs}


def pool(runs: list[dict[str, Any]], sharing: float) -> dict[str, Any]:
    """The draws ``runs`` of one sharing value pooled fold by fold (as :func:`run_sharing`)."""
    labels = [label for label in runs[0]["methods"] if all(label in r["methods"] for r in runs)]
    pooled = {
        label: {
            "run": runs[0]["methods"][label]["run"],
            **_summary([v for r in runs for v in r["methods"][label]["values"]]),
        }
        for label in labels
    }
    oracle = _summary([v for r in runs for v in r["oracle"]["values"]])
    seeds = [r.get("seed", 0) for r in runs]
    return {"sharing": sharing, "seeds": seeds, "oracle": oracle, "methods": pooled, "runs": runs}


def from_partial(paths: list[Path]) -> str:
    """Markdown of the draws finished so far, read from ``.partial.jsonl`` files (one draw a line)
    and finished runs' ``.json`` documents, one column per sharing value; a column pools the draws
    it has (listed above the tables)."""
    draws: dict[float, list[dict[str, Any]]] = {}
    for path in paths:
        if path.suffix == ".json":
            document = json.loads(path.read_text(encoding="utf-8"))
            records = [
                {"sharing": r["sharing"], "seed": seed, **run}
                for r in document["results"]
                for seed, run in zip(r["seeds"], r["runs"], strict=True)
            ]
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            records = [json.loads(line) for line in lines if line.strip()]
        for record in records:
            draws.setdefault(float(record["sharing"]), []).append(record)
    results = [pool(runs, sharing) for sharing, runs in sorted(draws.items())]
    counts = ", ".join(f"sharing {r['sharing']:g}: seeds {r['seeds']}" for r in results)
    return f"Finished draws: {counts}.\n\n" + markdown(results)


def run(
    quick: bool = False,
    *,
    sharing: tuple[float, ...] | None = None,
    seeds: tuple[int, ...] = (0,),
    work: Path | None = None,
    target_epochs: int | None = None,
    partial: Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns the JSON document (settings, per-setting results, markdown)."""
    size = QUICK if quick else FULL
    if target_epochs is not None:
        size = replace(size, target_epochs=target_epochs)
    base = Path(tempfile.mkdtemp(prefix="stephctl-transfer-")) if work is None else work
    started = time.perf_counter()
    try:
        results = [run_sharing(base, size, s, seeds, partial) for s in sharing or size.sharing]
    finally:
        if work is None:
            shutil.rmtree(base, ignore_errors=True)
    return {
        "benchmark": "transfer",
        "quick": quick,
        "seeds": list(seeds),
        "size": asdict(size),
        "variants": [{"label": label, "method": m, "overrides": o} for label, m, o in VARIANTS],
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
        "markdown": markdown(results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny cohorts and 2 epochs (a smoke test, not a result)"
    )
    parser.add_argument(
        "--sharing", type=float, nargs="+", help="sharing values to run (default: 0 0.5 1; quick: 0 1)"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="cohort draws per sharing value (default: 0)"
    )
    parser.add_argument(
        "--target-epochs",
        type=int,
        help="epochs of the target's models and merges (default 60; quick: train.epochs)",
    )
    parser.add_argument(
        "--work", type=Path, help="keep the generated projects here (default: a temporary folder, deleted)"
    )
    parser.add_argument(
        "--out-dir", type=Path, default=HERE / "results", help="where the JSON and markdown go"
    )
    parser.add_argument(
        "--from-partial",
        type=Path,
        nargs="+",
        help="print the tables of the draws in these .partial.jsonl / .json files and exit",
    )
    args = parser.parse_args(argv)
    if args.from_partial:
        sys.stdout.write(from_partial(args.from_partial))
        return 0
    sharing = tuple(args.sharing) if args.sharing else None
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"transfer-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}"
    partial = stem.with_suffix(".partial.jsonl")
    document = run(
        args.quick,
        sharing=sharing,
        seeds=tuple(args.seeds),
        work=args.work,
        target_epochs=args.target_epochs,
        partial=partial,
    )
    document["command"] = "python -m benchmarks.transfer " + " ".join(sys.argv[1:] if argv is None else argv)
    stem.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(document["markdown"], encoding="utf-8")
    sys.stdout.write(document["markdown"])
    partial.unlink(missing_ok=True)
    print(f"[transfer] wrote {stem}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
