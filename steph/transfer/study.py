"""The study over every target with results: the matrix, the gains, the factors and their tables.

Reads the per-target records (:mod:`steph.transfer.zero_shot`) and writes, under
``transfer/`` (:meth:`steph.layout.ProjectLayout.transfer_file`):

- ``pairs.csv``: one row per (source, target): mean and sd over folds of the zero-shot C-index,
  its pooled interval, the gain over the target's own model with its interval and the verdict
  (positive / negative / neutral transfer);
- ``matrix.csv`` (source rows x target columns, mean C-index) and ``matrix.json`` (mean, sd,
  gain and verdict matrices);
- ``factors.csv`` (per pair: gain and every factor of :mod:`steph.transfer.factors`) and
  ``factors.json`` (Spearman rho and permutation p of each factor with the gain);
- ``table.md``: the paper-style table and the rare-tumour table; ``rare.csv``;
- the heatmap, one scatter plot per factor and ``report.html`` (:mod:`steph.transfer.report`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..fileio import write_csv, write_json, write_text
from ..records import ModelRecord, TransferRecord
from .factors import FACTORS, Correlation, cosine, median_bandwidth, mmd2, permutation_spearman
from .zero_shot import MEAN_OF_SOURCES, load_means

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from ..config import ProjectConfig
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)

RARE_METHODS: tuple[tuple[str, str, str], ...] = (
    (
        "zero-shot, each source",
        "runs",
        "each source's cancer-specific model predicts the rare cancer's patients",
    ),
    (MEAN_OF_SOURCES, "runs", "the mean of the sources' risks per patient (no training)"),
    (
        "ROUPKT",
        "cannot run",
        "its router is trained on the target's training patients and routes to the target's own "
        "model among the experts; an evaluation-only cancer has neither",
    ),
    (
        "STEPH",
        "cannot run",
        "it mixes every source vector with the target's own task vector (lambda) and trains its "
        "hypernetwork on the target's training patients; an evaluation-only cancer has neither",
    ),
    (
        "other merge methods",
        "cannot run",
        "every merge method of stephctl starts from the target fold's task vector or trains on the "
        "target's training split",
    ),
)
"""(method, verdict, why) of the rare-tumour table."""


@dataclass
class Study:
    """Everything the study outputs are written from."""

    targets: list[str]
    sources: list[str]
    rare: list[str]
    records: dict[str, TransferRecord]
    cells: dict[tuple[str, str], dict[str, Any]]
    """(source, target) -> the target record's pooled row of that source."""
    factors: list[dict[str, Any]] = field(default_factory=list)
    correlations: list[Correlation] = field(default_factory=list)
    bandwidths: dict[str, float] = field(default_factory=dict)


def load_study(layout: ProjectLayout, config: ProjectConfig, cancers: list[str]) -> Study:
    """The records of every target with one (trained cancers first, then evaluation-only ones)."""
    order = [*cancers, *[c for c in config.evaluation_only if c not in cancers]]
    found = set(layout.transfer_targets())
    records = {t: TransferRecord.read(layout.transfer_target(t)) for t in order if t in found}
    sources = list(dict.fromkeys(s for r in records.values() for s in r.sources))
    cells = {(row["source"], t): row for t, r in records.items() for row in r.pooled}
    rare = [t for t, r in records.items() if r.evaluation_only]
    return Study(list(records), sources, rare, records, cells)


def compute_factors(layout: ProjectLayout, config: ProjectConfig, study: Study) -> None:
    """Fill ``study.factors`` (one row per source != target, target trained) and the correlations."""
    vectors: dict[tuple[str, int], NDArray[np.float64] | None] = {}
    train_stats: dict[tuple[str, int], tuple[float | None, float | None]] = {}
    means = {
        t: load_means(layout, t, len(r.patients)) for t, r in study.records.items() if not r.evaluation_only
    }
    for target in study.targets:
        record = study.records[target]
        if record.evaluation_only:
            continue
        for source in record.sources:
            cell = study.cells.get((source, target))
            if source == target or cell is None or cell.get("gain_mean") is None:
                continue
            folds = [
                (p["fold"], p.get("model_fold", p["fold"])) for p in record.pairs if p["source"] == source
            ]
            own_folds = {
                p["fold"]: p.get("model_fold", p["fold"]) for p in record.pairs if p["source"] == target
            }
            cos = [_cos(layout, vectors, (source, m), (target, own_folds.get(k, k))) for k, m in folds]
            stats = [_train_stats(layout, config, train_stats, source, m) for _, m in dict.fromkeys(folds)]
            own = study.cells.get((source, source), {}).get("c_mean")
            row: dict[str, Any] = {
                "source": source,
                "target": target,
                "gain": cell["gain_mean"],
                "c": cell["c_mean"],
                "cosine": _finite_mean(cos),
                "mmd": _mmd(means, source, target, config, study),
                "n_train": _finite_mean([s[0] for s in stats]),
                "event_rate": _finite_mean([s[1] for s in stats]),
                "own_c": own,
            }
            study.factors.append(row)
    gains = [r["gain"] for r in study.factors]
    settings = config.transfer
    study.correlations = [
        permutation_spearman(
            name,
            [_f(r[name]) for r in study.factors],
            gains,
            permutations=settings.permutations,
            seed=settings.seed + i,
        )
        for i, name in enumerate(FACTORS)
    ]


def _f(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _finite_mean(values: list[float | None]) -> float | None:
    clean = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(clean)) if clean else None


def _cos(
    layout: ProjectLayout,
    cache: dict[tuple[str, int], NDArray[np.float64] | None],
    source: tuple[str, int],
    target: tuple[str, int],
) -> float | None:
    """Cosine of the task vectors of the (cancer, fold) models that made the two predictions."""
    a, b = _vector(layout, cache, *source), _vector(layout, cache, *target)
    if a is None or b is None or a.shape != b.shape:
        return None
    return cosine(a, b)


def _vector(
    layout: ProjectLayout, cache: dict[tuple[str, int], NDArray[np.float64] | None], cancer: str, fold: int
) -> NDArray[np.float64] | None:
    if (cancer, fold) not in cache:
        from ..task_vectors import flatten, load_task_vector

        if not layout.task_vector_meta(cancer, fold).is_file():
            cache[(cancer, fold)] = None
        else:
            state, _ = load_task_vector(layout, cancer, fold)
            cache[(cancer, fold)] = flatten(state, sorted(state)).double().numpy()
    return cache[(cancer, fold)]


def _train_stats(
    layout: ProjectLayout,
    config: ProjectConfig,
    cache: dict[tuple[str, int], tuple[float | None, float | None]],
    source: str,
    fold: int,
) -> tuple[float | None, float | None]:
    """(training patients, their event rate) of the source's fold-k model."""
    if (source, fold) not in cache:
        from ..data import load_cohort, load_split

        record = ModelRecord.read(layout.model_meta(source, fold))
        cohort = load_cohort(layout, config, source)
        split = load_split(layout, cohort, fold)
        events = [cohort.patients[p].e for p in split.train]
        n = record.n_train if record.n_train is not None else len(split.train)
        cache[(source, fold)] = (float(n), float(np.mean(events)) if events else None)
    return cache[(source, fold)]


def _mmd(
    means: dict[str, NDArray[np.float64] | None],
    source: str,
    target: str,
    config: ProjectConfig,
    study: Study,
) -> float | None:
    x, y = means.get(source), means.get(target)
    if x is None or y is None or x.shape[1] != y.shape[1]:
        return None
    sigma = config.transfer.mmd_bandwidth or median_bandwidth(x, y)
    study.bandwidths[f"{source}->{target}"] = sigma
    value = mmd2(x, y, bandwidth=sigma)
    return None if math.isnan(value) else value


# -- outputs -------------------------------------------------------------------------------------
PAIR_COLUMNS = (
    "source",
    "target",
    "evaluation_only",
    "folds",
    "c_mean",
    "c_sd",
    "c_low",
    "c_high",
    "c_train_mean",
    "gain_mean",
    "gain_low",
    "gain_high",
    "transfer",
)


def _fmt(value: Any, digits: int = 4) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return round(value, digits) if isinstance(value, float) else value


def rows_of(study: Study) -> list[str]:
    """Matrix rows: the sources, then the ensemble."""
    has_mean = any(name == MEAN_OF_SOURCES for name, _ in study.cells)
    return [*study.sources, *([MEAN_OF_SOURCES] if has_mean else [])]


def write_study(layout: ProjectLayout, config: ProjectConfig, study: Study) -> dict[str, str]:
    """Write every study output (module docstring); returns name -> path."""
    from .report import write_figures, write_report

    out: dict[str, str] = {}
    rows = rows_of(study)
    pair_rows = [
        [
            source,
            target,
            int(study.records[target].evaluation_only),
            *(_fmt(study.cells[(source, target)].get(c)) for c in PAIR_COLUMNS[3:]),
        ]
        for target in study.targets
        for source in rows
        if (source, target) in study.cells
    ]
    out["pairs"] = str(write_csv(layout.transfer_file("pairs.csv"), list(PAIR_COLUMNS), pair_rows))
    matrix = [
        [source, *(_fmt(study.cells.get((source, t), {}).get("c_mean")) for t in study.targets)]
        for source in rows
    ]
    out["matrix_csv"] = str(write_csv(layout.transfer_file("matrix.csv"), ["source", *study.targets], matrix))

    def grid(key: str) -> list[list[Any]]:
        return [[study.cells.get((s, t), {}).get(key) for t in study.targets] for s in rows]

    settings = config.transfer
    out["matrix_json"] = str(
        write_json(
            layout.transfer_file("matrix.json"),
            {
                "sources": rows,
                "targets": study.targets,
                "evaluation_only": study.rare,
                "c_mean": grid("c_mean"),
                "c_sd": grid("c_sd"),
                "c_low": grid("c_low"),
                "c_high": grid("c_high"),
                "gain_mean": grid("gain_mean"),
                "gain_low": grid("gain_low"),
                "gain_high": grid("gain_high"),
                "transfer": grid("transfer"),
                "bootstrap": settings.bootstrap,
                "confidence": settings.confidence,
            },
        )
    )
    names = list(FACTORS)
    out["factors_csv"] = str(
        write_csv(
            layout.transfer_file("factors.csv"),
            ["source", "target", "c", "gain", *names],
            [
                [r["source"], r["target"], _fmt(r["c"]), _fmt(r["gain"]), *(_fmt(r[n], 6) for n in names)]
                for r in study.factors
            ],
        )
    )
    out["factors_json"] = str(
        write_json(
            layout.transfer_file("factors.json"),
            {
                "outcome": "gain = C(source -> target) - C(target's own model), mean over folds",
                "pairs": len(study.factors),
                "permutations": settings.permutations,
                "factors": {
                    c.factor: {
                        "label": FACTORS[c.factor],
                        "rho": _nan(c.rho),
                        "p": _nan(c.p),
                        "pairs": c.pairs,
                    }
                    for c in study.correlations
                },
                "mmd": {
                    "kernel": "gaussian exp(-|x - y|^2 / (2 sigma^2)) on patient-mean features",
                    "estimate": "unbiased MMD^2",
                    "bandwidth": settings.mmd_bandwidth
                    if settings.mmd_bandwidth
                    else "median pooled distance per pair",
                },
            },
        )
    )
    if study.rare:
        rare_rows = [
            [
                t,
                s,
                *(_fmt(study.cells[(s, t)].get(c)) for c in ("folds", "c_mean", "c_sd", "c_low", "c_high")),
            ]
            for t in study.rare
            for s in rows
            if (s, t) in study.cells
        ]
        out["rare"] = str(
            write_csv(
                layout.transfer_file("rare.csv"),
                ["target", "source", "folds", "c_mean", "c_sd", "c_low", "c_high"],
                rare_rows,
            )
        )
    out["table"] = str(write_text(layout.transfer_file("table.md"), markdown(study)))
    figures = write_figures(layout, study)
    out.update(figures)
    out["report"] = str(write_report(layout, study, figures))
    return out


def _nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def _cell_text(cell: dict[str, Any] | None, *, diagonal: bool) -> str:
    if cell is None or cell.get("c_mean") is None:
        return "-"
    sd = f" ± {cell['c_sd']:.3f}" if cell.get("c_sd") is not None else ""
    text = f"{cell['c_mean']:.3f}{sd}"
    if diagonal:
        return f"**{text}**"
    mark = {"positive": " ↑", "negative": " ↓"}.get(cell.get("transfer", ""), "")
    return text + mark


def markdown(study: Study) -> str:
    """The paper-style table (rows sources, columns targets, mean ± sd C-index over folds; the
    diagonal, each cancer's own model, in bold; ↑/↓ positive/negative transfer), the factor
    correlations and, when there are evaluation-only cancers, the rare-tumour table."""
    rows = rows_of(study)
    trained = [t for t in study.targets if t not in study.rare]
    lines = [
        "Zero-shot C-index (mean ± sd over folds) of each source's model (rows) on each target's "
        "test patients (columns). Bold: the target's own cancer-specific model. ↑ / ↓: positive / "
        "negative transfer (the bootstrap interval of the gain over the target's own model excludes 0).",
        "",
    ]
    if trained:
        lines += ["| source \\ target | " + " | ".join(trained) + " |", "|---|" + "---:|" * len(trained)]
        for source in rows:
            cells = [_cell_text(study.cells.get((source, t)), diagonal=source == t) for t in trained]
            lines.append(f"| {source} | " + " | ".join(cells) + " |")
        lines.append("")
    if study.correlations:
        lines += [
            f"Spearman correlation of each factor with the gain over {len(study.factors)} (source, target) pairs "
            "(two-sided permutation p-value).",
            "",
            "| factor | rho | p | pairs |",
            "|---|---:|---:|---:|",
        ]
        for c in study.correlations:
            rho = "n/a" if math.isnan(c.rho) else f"{c.rho:+.3f}"
            p = "n/a" if math.isnan(c.p) else f"{c.p:.4f}"
            lines.append(f"| {FACTORS[c.factor]} | {rho} | {p} | {c.pairs} |")
        lines.append("")
    if study.rare:
        lines += [
            "Rare tumours (evaluation-only): zero-shot C-index (mean ± sd over the sources' folds; every "
            "labelled patient is a test patient).",
            "",
            "| source \\ target | " + " | ".join(study.rare) + " |",
            "|---|" + "---:|" * len(study.rare),
        ]
        for source in rows:
            cells = [_cell_text(study.cells.get((source, t)), diagonal=False) for t in study.rare]
            lines.append(f"| {source} | " + " | ".join(cells) + " |")
        lines += ["", "| method | on a rare tumour | why |", "|---|---|---|"]
        lines += [f"| {m} | {verdict} | {why} |" for m, verdict, why in RARE_METHODS]
        lines.append("")
    return "\n".join(lines)
