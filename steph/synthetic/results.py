"""Synthetic finished results: labels, splits and every method's test-set predictions of a project.

What ``stephctl evaluate`` reads, without training anything (its tests and
``benchmarks/bench_evaluate.py``). Each patient has a latent risk ``r ~ N(0, 1)``, an
exponential survival time with scale ``1500 exp(-r)`` days (whole days, so times tie) and an
independent censoring time ``~ U(100, 4000)`` days (also whole). A method of quality ``q``
predicts the score ``s = q r + (1 - q) noise`` (noise ``~ N(0, 1)``, one draw per method); its
hazard is ``sigmoid(-2.2 + 0.8 s)`` in every bin, so a better method has a higher C-index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..fileio import write_csv
from ..layout import CANCER_SPECIFIC, ProjectLayout
from ..predictions import write_predictions
from ..records import MergeRecord, ModelRecord
from .tables import LABEL_COLUMNS, write_split

QUALITY = {"cancer-specific": 0.55, "task-arithmetic": 0.6, "steph": 0.75}
"""Default methods and their quality ``q``."""
SOURCES = ("BLCA", "COADREAD", "GBMLGG", "KIRC", "LUAD")
"""Source cancers named in the STEPH coefficients written."""


def _hazards(score: np.ndarray, bins: int) -> torch.Tensor:
    logits = -2.2 + 0.8 * score
    return torch.sigmoid(torch.tensor(np.repeat(logits[:, None], bins, axis=1)))


def write_results(
    root: Path,
    *,
    targets: Sequence[str] = ("BRCA",),
    methods: Mapping[str, float] | None = None,
    folds: int = 3,
    patients: int = 90,
    bins: int = 32,
    seed: int = 0,
    coefficients_for: Sequence[str] = ("steph",),
) -> ProjectLayout:
    """Write under ``root``, for each target, ``labels/<T>.csv`` (one slide per patient),
    ``folds`` splits (consecutive groups of a random order), and for each method of ``methods``
    (name -> quality ``q``, default :data:`QUALITY`) and fold the test-set predictions and
    metrics, the record that marks the result finished (:meth:`ProjectLayout.result_record`: a
    :class:`~steph.records.ModelRecord` for ``cancer-specific``, a
    :class:`~steph.records.MergeRecord` otherwise), and for the methods of ``coefficients_for``
    STEPH's per-patient coefficients. The same arguments write the same files.
    """
    layout = ProjectLayout(root)
    rng = np.random.default_rng(seed)
    methods = QUALITY if methods is None else methods
    for target in targets:
        ids = [f"{target}-{i:03d}" for i in range(patients)]
        risk = rng.normal(size=patients)
        event_time = np.ceil(rng.exponential(1500.0 * np.exp(-risk)))
        censor_time = np.ceil(rng.uniform(100.0, 4000.0, patients))
        t = np.minimum(event_time, censor_time)
        e = (event_time <= censor_time).astype(int)
        write_csv(
            layout.labels(target),
            LABEL_COLUMNS,
            [[pid, f"{pid}-S1", int(t[i]), int(e[i])] for i, pid in enumerate(ids)],
        )
        order = rng.permutation(patients)
        groups = np.array_split(order, folds)
        noise = {m: rng.normal(size=patients) for m in methods}
        for k in range(folds):
            test = groups[k]
            train = np.concatenate([g for j, g in enumerate(groups) if j != k])
            write_split(layout, target, k, [ids[i] for i in train], [ids[i] for i in test])
            for method, quality in methods.items():
                score = quality * risk + (1.0 - quality) * noise[method]
                write_predictions(
                    layout.predictions(target, method, k),
                    layout.result_metrics(target, method, k),
                    ids=[ids[i] for i in test],
                    times=t[test].tolist(),
                    events=e[test].tolist(),
                    hazards=_hazards(score[test], bins),
                    train_hazards=_hazards(score[train], bins),
                )
                if method == CANCER_SPECIFIC:
                    ModelRecord(cancer=target, fold=k).write(layout.model_meta(target, k))
                else:
                    MergeRecord(method=method, target=target, fold=k).write(
                        layout.merged_meta(target, method, k)
                    )
                if method in coefficients_for:
                    _write_coefficients(layout, target, method, k, [ids[i] for i in test], rng)
    return layout


def _write_coefficients(
    layout: ProjectLayout, target: str, method: str, fold: int, ids: list[str], rng: np.random.Generator
) -> None:
    """Top-3 of 5 sources per patient, w on the selected ones (summing to 1), lambda in (0, 1]."""
    affinity = np.array([2.0, 0.5, 1.0, 0.2, 1.5])
    rows = []
    for pid in ids:
        logits = affinity + rng.normal(scale=0.7, size=len(SOURCES))
        chosen = np.argsort(-logits)[:3]
        w = np.zeros(len(SOURCES))
        w[chosen] = np.exp(logits[chosen]) / np.exp(logits[chosen]).sum()
        lam = 1.0 / (1.0 + np.exp(-(logits - 1.0)))
        for j, source in enumerate(SOURCES):
            rows.append([pid, source, float(w[j]), float(lam[j]), int(j in chosen)])
    write_csv(
        layout.merged_coefficients(target, method, fold),
        ["patient_id", "source", "w", "lambda", "selected"],
        rows,
    )
