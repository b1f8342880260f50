"""Synthetic results for evaluation tests: labels, splits and predictions of several methods.

Each patient has a latent risk r ~ N(0, 1), an exponential survival time with scale
``1500 exp(-r)`` days (whole days, so times tie) and an independent uniform censoring time. A
method of quality q predicts the score ``q r + (1 - q) noise``; its per-bin hazards are
``sigmoid(-2.2 + 0.8 score)`` in every yearly bin, so better methods have higher C-indices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from steph.fileio import write_csv, write_json
from steph.layout import ProjectLayout
from steph.predictions import write_predictions

QUALITY = {"cancer-specific": 0.55, "task-arithmetic": 0.6, "steph": 0.75}
SOURCES = ("BLCA", "COADREAD", "GBMLGG", "KIRC", "LUAD")


def _hazards(score: np.ndarray, bins: int) -> torch.Tensor:
    logits = -2.2 + 0.8 * score
    return torch.sigmoid(torch.tensor(np.repeat(logits[:, None], bins, axis=1)))


def write_results(
    root: Path,
    *,
    targets: tuple[str, ...] = ("BRCA",),
    methods: dict[str, float] | None = None,
    folds: int = 3,
    patients: int = 90,
    bins: int = 32,
    seed: int = 0,
    coefficients_for: tuple[str, ...] = ("steph",),
) -> ProjectLayout:
    """Write labels, k-fold splits and every method's predictions (+ STEPH coefficients) under ``root``."""
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
            ["patient_id", "slide_id", "t", "e"],
            [[pid, f"{pid}-S1", int(t[i]), int(e[i])] for i, pid in enumerate(ids)],
        )
        order = rng.permutation(patients)
        groups = np.array_split(order, folds)
        noise = {m: rng.normal(size=patients) for m in methods}
        for k in range(folds):
            test = groups[k]
            train = np.concatenate([g for j, g in enumerate(groups) if j != k])
            width = max(len(train), len(test))
            rows = [
                [ids[train[i]] if i < len(train) else "", ids[test[i]] if i < len(test) else ""]
                for i in range(width)
            ]
            write_csv(layout.split(target, k), ["train", "test"], rows)
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
                write_json(result_record(layout, target, method, k), {"method": method, "fold": k})
                if method in coefficients_for:
                    _write_coefficients(layout, target, method, k, [ids[i] for i in test], rng)
    return layout


def result_record(layout: ProjectLayout, target: str, method: str, fold: int) -> Path:
    """The record that marks a result finished (``ProjectLayout.result_record``, spelled out)."""
    if method == "cancer-specific":
        return layout.model_meta(target, fold)
    return layout.merged_file(target, method, fold, "meta.json")


def _write_coefficients(
    layout: ProjectLayout, target: str, method: str, fold: int, ids: list[str], rng
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
        layout.merged_file(target, method, fold, "coefficients.csv"),
        ["patient_id", "source", "w", "lambda", "selected"],
        rows,
    )
