"""One target's zero-shot transfer: every source's trained model applied to the target's patients.

For target T, every source S of the project (T itself included: the diagonal, T's own
cancer-specific model) and every fold k, S's model of fold k predicts T's patients of fold k
(risk = -sum_j S_j, as everywhere in stephctl); a source-only cancer (``targets:`` set without
it) has one model, of ``merge.source_fold``, applied to every fold. On T's test split of fold k:

    C(S -> T, k)    Harrell's C (:func:`steph.metrics.harrell_statistic`)
    gain(S, T, k) = C(S -> T, k) - C(T -> T, k)

with percentile intervals from a paired bootstrap: the same resample multiplicities of T's test
patients (seeded by ``transfer.seed``, T and k) for every source, so a gain's replicate is the
difference of two replicates on the same resample. Over folds, the mean's replicate ``r`` is the
mean of the folds' replicates ``r`` (independent test sets). A gain whose interval lies above 0 is
**positive transfer**, below 0 **negative transfer**.

The C-index on T's *training* split of fold k is kept too (``c_train``): it is what ``merge
--sources auto:K`` ranks sources by, so the choice never sees T's test split
(:mod:`steph.transfer.choose`).

``mean-of-sources`` is the zero-shot ensemble of every source but T: the mean of their risks per
patient. An evaluation-only cancer (a rare tumour, ``evaluation_only`` in stephctl.yaml) has no
splits and no model of its own: every labelled patient is a test patient of every fold, and
there is no diagonal and no gain.

T's features are read once for every source and fold; the patient-mean features (the mean of a
patient's patch features) are saved next to the record for the distribution factor
(:mod:`steph.transfer.factors`).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..errors import MissingArtifactError
from ..layout import CANCER_SPECIFIC
from ..metrics import harrell_c, harrell_statistic, percentile_interval, resample_counts, stable_seed
from ..progress import NULL_PROGRESS, Progress
from ..records import ModelRecord, TransferRecord

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)

MEAN_OF_SOURCES = "mean-of-sources"
"""Row of the zero-shot ensemble: the mean of every other source's risk."""


@dataclass(frozen=True)
class TargetFold:
    """The patients of one fold of the target (training ids empty for an evaluation-only cancer)."""

    fold: int
    train: tuple[str, ...]
    test: tuple[str, ...]


def transfer_sources(config: ProjectConfig, cancers: Sequence[str]) -> list[str]:
    """Sources of every target: the project's trained cancers (evaluation-only ones never train)."""
    return [c for c in cancers if c not in config.evaluation_only]


def target_folds(
    layout: ProjectLayout, config: ProjectConfig, target: str, sources: Sequence[str]
) -> list[int]:
    """Folds of ``target``: its own (``train.folds`` or its split files); for an evaluation-only
    cancer, the folds every source trains."""
    from ..config.project import project_folds

    if target not in config.evaluation_only:
        return project_folds(layout, config, target)
    common: set[int] | None = None
    for source in sources:
        folds = set(project_folds(layout, config, source))
        common = folds if common is None else common & folds
    return sorted(common or ())


def model_fold(layout: ProjectLayout, config: ProjectConfig, source: str, fold: int) -> int:
    """The fold of ``source``'s model applied to a target's fold ``fold``: the same fold, or the
    one fold a source-only cancer trains (``targets:`` set without it: ``merge.source_fold``).

    >>> from steph.config import ProjectConfig
    >>> from steph.layout import ProjectLayout
    >>> config = ProjectConfig(cancers=["BRCA", "BLCA"], targets=["BRCA"])
    >>> model_fold(ProjectLayout("/p"), config, "BLCA", 3), model_fold(ProjectLayout("/p"), config, "BRCA", 3)
    (0, 3)
    """
    from ..config.project import project_folds

    if config.targets and source not in config.targets and source in config.cancers:
        return project_folds(layout, config, source)[0]
    return fold


def required_models(
    layout: ProjectLayout, config: ProjectConfig, sources: Sequence[str], folds: Sequence[int]
) -> None:
    """Raise unless every (source, fold) model is trained (:func:`model_fold`).

    Raises:
        MissingArtifactError: lists the missing models and the command that trains them.
    """
    wanted = dict.fromkeys((s, model_fold(layout, config, s, k)) for s in sources for k in folds)
    missing = [(s, k) for s, k in wanted if not layout.model_meta(s, k).is_file()]
    if missing:
        shown = ", ".join(f"{s} fold {k}" for s, k in missing[:8])
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        cancers = " ".join(f"-c {s}" for s in dict.fromkeys(s for s, _ in missing))
        raise MissingArtifactError(
            f"zero-shot transfer needs every source's model of every fold: missing {shown}{more}",
            hint=f"run `stephctl -p {layout.root} train-source {cancers}`",
        )


def _nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


@dataclass
class _Scored:
    c: float
    replicates: NDArray[np.float64]


def _score(
    time: NDArray[np.float64],
    event: NDArray[np.bool_],
    risk: NDArray[np.float64],
    counts: NDArray[np.float64],
) -> _Scored:
    stat = harrell_statistic(time, event, risk)
    reps = stat.resample(counts) if counts.size else np.empty(0)
    return _Scored(stat.estimate(), reps)


def _interval(replicates: NDArray[np.float64], confidence: float) -> tuple[float | None, float | None]:
    if replicates.size == 0:
        return None, None
    interval = percentile_interval(replicates, confidence)
    return _nan(interval.low), _nan(interval.high)


def transfer_label(low: float | None, high: float | None) -> str:
    """``positive`` (interval above 0), ``negative`` (below 0), ``neutral`` or ``n/a`` (no interval).

    >>> transfer_label(0.01, 0.05), transfer_label(-0.2, -0.01), transfer_label(-0.1, 0.1), transfer_label(None, None)
    ('positive', 'negative', 'neutral', 'n/a')
    """
    if low is None or high is None:
        return "n/a"
    return "positive" if low > 0 else "negative" if high < 0 else "neutral"


def run_target(
    layout: ProjectLayout,
    config: ProjectConfig,
    target: str,
    sources: Sequence[str],
    *,
    progress: Progress = NULL_PROGRESS,
) -> TransferRecord:
    """Zero-shot C-index of every (source, fold) on ``target`` (module docstring); writes the
    patient-mean features and returns the record (the caller writes it, last).

    Raises:
        MissingArtifactError: a source model, the target's labels, splits or features are missing.
        DataError: unreadable labels, splits or features.
    """
    import torch

    from ..data import load_cohort, load_split, open_bags
    from ..evaluation.predictors import project_model
    from ..runtime import resolve_device
    from ..theta0 import theta0_dim_in, versions

    settings = config.transfer
    rare = target in config.evaluation_only
    sources = [s for s in sources if not (rare and s == target)]
    folds = target_folds(layout, config, target, sources)
    if not folds:
        raise MissingArtifactError(
            f"{target}: no folds to evaluate (no split files, and no fold every source trains)",
            hint="run `stephctl splits` / train-source first",
        )
    required_models(layout, config, sources, folds)
    cohort = load_cohort(layout, config, target)
    if rare:
        everyone = tuple(sorted(cohort.patients))
        parts = [TargetFold(k, (), everyone) for k in folds]
    else:
        parts = []
        for k in folds:
            split = load_split(layout, cohort, k)
            parts.append(TargetFold(k, tuple(split.train), tuple(split.test)))
    ids = sorted({pid for part in parts for pid in (*part.train, *part.test)})
    bags = open_bags(
        layout,
        config,
        cohort,
        ids,
        dim=theta0_dim_in(layout),
        dim_of=f"theta0 {layout.theta0}",
        progress=progress,
    )
    means = np.stack([bags.get(pid).double().mean(dim=0).numpy() for pid in ids]).astype(np.float32)
    _save_means(layout, target, means)
    device = resolve_device(config.train.device)
    pairs: list[dict[str, Any]] = []
    reps: dict[tuple[str, int], NDArray[np.float64]] = {}
    models: dict[str, str] = {}
    progress.start(f"transfer {target}", len(sources) * len(parts), unit="models")
    try:
        for part in parts:
            time = np.array([cohort.patients[p].t for p in part.test], dtype=np.float64)
            event = np.array([cohort.patients[p].e for p in part.test], dtype=bool)
            counts = (
                resample_counts(
                    len(part.test), settings.bootstrap, stable_seed(settings.seed, target, part.fold)
                )
                if settings.bootstrap
                else np.empty((0, len(part.test)))
            )
            risks: dict[str, NDArray[np.float64]] = {}
            for source in sources:
                fold_of_model = model_fold(layout, config, source, part.fold)
                model = project_model(layout, config, source, CANCER_SPECIFIC, fold_of_model, device=device)
                wanted = [*part.test, *part.train]
                with torch.inference_mode():
                    _, surv = model.predict(
                        wanted,
                        bags,
                        device=device,
                        max_batch_patches=config.train.max_bag_batch_patches,
                        precision=config.train.precision,
                    )
                risk = (-surv.sum(dim=1)).numpy().astype(np.float64)
                test_risk, train_risk = risk[: len(part.test)], risk[len(part.test) :]
                risks[source] = test_risk
                scored = _score(time, event, test_risk, counts)
                reps[(source, part.fold)] = scored.replicates
                c_train = None
                if part.train:
                    t_train = [cohort.patients[p].t for p in part.train]
                    e_train = [cohort.patients[p].e for p in part.train]
                    c_train = _nan(harrell_c(t_train, e_train, train_risk).value)
                low, high = _interval(scored.replicates, settings.confidence)
                pairs.append(
                    {
                        "source": source,
                        "fold": part.fold,
                        "model_fold": fold_of_model,
                        "n": len(part.test),
                        "events": int(event.sum()),
                        "c": _nan(scored.c),
                        "c_low": low,
                        "c_high": high,
                        "c_train": c_train,
                    }
                )
                record = ModelRecord.read(layout.model_meta(source, fold_of_model))
                models[f"{source}/fold_{fold_of_model}"] = record.model_sha256 or ""
                progress.advance(f"transfer {target}", 1, item=f"{source} fold {part.fold}")
            others = [s for s in sources if s != target]
            if len(others) > 1:
                ensemble = _score(time, event, np.mean([risks[s] for s in others], axis=0), counts)
                reps[(MEAN_OF_SOURCES, part.fold)] = ensemble.replicates
                low, high = _interval(ensemble.replicates, settings.confidence)
                pairs.append(
                    {
                        "source": MEAN_OF_SOURCES,
                        "fold": part.fold,
                        "n": len(part.test),
                        "events": int(event.sum()),
                        "c": _nan(ensemble.c),
                        "c_low": low,
                        "c_high": high,
                        "c_train": None,
                    }
                )
    finally:
        progress.finish(f"transfer {target}")
    _add_gains(pairs, reps, target, rare, settings.confidence)
    row_names = [*sources, *([MEAN_OF_SOURCES] if any(p["source"] == MEAN_OF_SOURCES for p in pairs) else [])]
    pooled = [_pool(name, pairs, reps, folds, target, rare, settings.confidence) for name in row_names]
    return TransferRecord(
        target=target,
        evaluation_only=rare,
        sources=list(sources),
        folds=list(folds),
        patients=ids,
        pairs=pairs,
        pooled=pooled,
        bootstrap=settings.bootstrap,
        confidence=settings.confidence,
        seed=settings.seed,
        models=models,
        versions=versions(),
    )


def _save_means(layout: ProjectLayout, target: str, means: NDArray[np.float32]) -> None:
    from ..fileio import atomic_path

    with atomic_path(layout.transfer_means(target)) as tmp, open(tmp, "wb") as fh:
        np.save(fh, means, allow_pickle=False)


def load_means(layout: ProjectLayout, target: str, patients: int) -> NDArray[np.float64] | None:
    """The patient-mean features of ``target`` (``[patients, D]``), None when absent or not that shape."""
    path = layout.transfer_means(target)
    if not path.is_file():
        return None
    array: np.ndarray = np.load(path, allow_pickle=False)
    if array.ndim != 2 or array.shape[0] != patients or not np.isfinite(array).all():
        log.warning("%s: not a [%d, D] finite array; ignored", path, patients)
        return None
    return array.astype(np.float64)


def _add_gains(
    pairs: list[dict[str, Any]],
    reps: dict[tuple[str, int], NDArray[np.float64]],
    target: str,
    rare: bool,
    confidence: float,
) -> None:
    own = {p["fold"]: p["c"] for p in pairs if p["source"] == target}
    for pair in pairs:
        if rare or pair["source"] == target or own.get(pair["fold"]) is None or pair["c"] is None:
            pair.update(gain=None, gain_low=None, gain_high=None)
            continue
        diff = reps[(pair["source"], pair["fold"])] - reps[(target, pair["fold"])]
        low, high = _interval(diff, confidence)
        pair.update(gain=pair["c"] - own[pair["fold"]], gain_low=low, gain_high=high)


def _pool(
    name: str,
    pairs: list[dict[str, Any]],
    reps: dict[tuple[str, int], NDArray[np.float64]],
    folds: Sequence[int],
    target: str,
    rare: bool,
    confidence: float,
) -> dict[str, Any]:
    """Mean and sd over folds of one row; pooled intervals from fold-averaged replicates."""
    rows = {p["fold"]: p for p in pairs if p["source"] == name}
    values = [rows[k]["c"] for k in folds if k in rows and rows[k]["c"] is not None]
    out: dict[str, Any] = {
        "source": name,
        "folds": len(values),
        "c_mean": float(np.mean(values)) if values else None,
        "c_sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        "c_train_mean": _mean([rows[k].get("c_train") for k in folds if k in rows]),
    }
    usable = [k for k in folds if k in rows and reps[(name, k)].size]
    stacked = np.array([reps[(name, k)] for k in usable]) if usable else np.empty((0, 0))
    out["c_low"], out["c_high"] = _interval(_fold_mean(stacked), confidence) if usable else (None, None)
    gains = [rows[k]["gain"] for k in folds if k in rows and rows[k].get("gain") is not None]
    out["gain_mean"] = float(np.mean(gains)) if gains and len(gains) == len(values) else None
    out["gain_low"] = out["gain_high"] = None
    if out["gain_mean"] is not None and usable and not rare and name != target:
        own = np.array([reps[(target, k)] for k in usable])
        out["gain_low"], out["gain_high"] = _interval(_fold_mean(stacked - own), confidence)
    out["transfer"] = (
        "own" if name == target else transfer_label(out["gain_low"], out["gain_high"]) if not rare else "n/a"
    )
    return out


def _fold_mean(replicates: NDArray[np.float64]) -> NDArray[np.float64]:
    """Replicate-wise mean over folds ``[folds, R] -> [R]``, skipping folds where a replicate is
    undefined (NaN where it is undefined in every fold)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN, left out of the interval
        mean: NDArray[np.float64] = np.nanmean(replicates, axis=0)
    return mean


def _mean(values: Sequence[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return float(np.mean(clean)) if clean else None
