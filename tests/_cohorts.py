"""A tiny synthetic feature-level cohort in the project layout, for tests of every stage.

:func:`make_feature_project` initialises a project (``steph.project.init_project``) and writes,
for each cancer, ``labels/<CANCER>.csv``, ``splits/<CANCER>/splits_<k>.csv`` and one our-format
feature file per slide (``features/<encoder>/<slide_id>.h5``: ``features [N, D]`` float32 and
``coords [N, 2]`` int64). Everything is drawn from one seeded generator, so a call is
reproducible.

The data carry a weak, learnable signal: each patient has a latent risk r ~ N(0, 1); patch
features are N(0, 1) noise plus ``0.5 r`` along a fixed unit direction, and the survival time is
exponential with scale ``1500 exp(-r)`` days, censored by an independent uniform time. About one
patient in four has two slides (labels then carry two rows with the same t and e).

The project's stephctl.yaml is rewritten with a small model (``dim_emb 32``, ``dim_attn 16``)
and a short protocol (``epochs 2``, ``batch_size 4``) so that a full run takes a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import yaml

from steph.fileio import write_csv
from steph.layout import ProjectLayout
from steph.project import init_project

SMALL_SETTINGS: dict[str, dict[str, object]] = {
    "model": {"dim_emb": 32, "dim_attn": 16},
    "train": {"epochs": 2, "batch_size": 4},
}
"""Overrides written into the test project's stephctl.yaml (tiny model, short protocol)."""


def write_features_h5(path: Path, features: np.ndarray, *, encoder: str = "synthetic") -> None:
    """Write one slide's features in our format (``features`` [N, D] float32, ``coords`` [N, 2])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(features.shape[0])
    coords = np.stack([np.arange(n, dtype=np.int64) * 256, np.zeros(n, dtype=np.int64)], axis=1)
    with h5py.File(path, "w") as fh:
        fh.create_dataset("features", data=features.astype(np.float32))
        fh.create_dataset("coords", data=coords)
        fh.attrs["encoder"] = encoder


def _kfold(ids: list[str], events: dict[str, int], folds: int, rng: np.random.Generator) -> list[list[str]]:
    """Event-stratified assignment of patients to ``folds`` test groups."""
    groups: list[list[str]] = [[] for _ in range(folds)]
    for stratum in (1, 0):
        members = [pid for pid in ids if events[pid] == stratum]
        rng.shuffle(members)
        for i, pid in enumerate(members):
            groups[i % folds].append(pid)
    return groups


def write_cohort(
    layout: ProjectLayout,
    cancer: str,
    *,
    encoder: str,
    n_patients: int,
    dim: int,
    folds: int,
    rng: np.random.Generator,
    patches: tuple[int, int] = (6, 20),
) -> None:
    """Labels, splits and feature files of one synthetic cancer cohort."""
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    rows: list[list[object]] = []
    ids: list[str] = []
    events: dict[str, int] = {}
    for i in range(n_patients):
        pid = f"{cancer}-P{i:03d}"
        risk = float(rng.normal())
        event_time = rng.exponential(1500.0 * np.exp(-risk))
        censor_time = rng.uniform(100.0, 3000.0)
        t = float(np.round(min(event_time, censor_time), 1))
        e = int(event_time <= censor_time)
        n_slides = 2 if rng.random() < 0.25 else 1
        for j in range(n_slides):
            slide_id = f"{pid}-S{j}"
            k = int(rng.integers(patches[0], patches[1] + 1))
            features = rng.normal(size=(k, dim)) + 0.5 * risk * direction
            write_features_h5(layout.own_features(encoder, slide_id), features, encoder=encoder)
            rows.append([pid, slide_id, t, e])
        ids.append(pid)
        events[pid] = e
    write_csv(layout.labels(cancer), ["patient_id", "slide_id", "t", "e"], rows)
    groups = _kfold(ids, events, folds, rng)
    for k in range(folds):
        test = groups[k]
        train = [pid for pid in ids if pid not in set(test)]
        n_rows = max(len(train), len(test))
        cells = [
            [train[r] if r < len(train) else "", test[r] if r < len(test) else ""] for r in range(n_rows)
        ]
        write_csv(layout.split(cancer, k), ["train", "test"], cells)


def make_feature_project(
    root: Path | str,
    cancers: Sequence[str] = ("BRCA", "BLCA"),
    n_patients: int = 24,
    dim: int = 16,
    folds: int = 2,
    seed: int = 0,
) -> Path:
    """Initialise a project at ``root`` with a synthetic feature-level cohort per cancer.

    Returns:
        The project root (pass it to ``stephctl -p`` or ``steph.config.load_project``).
    """
    layout = init_project(root, cancers=list(cancers))
    config_path = layout.config_file
    data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    for section, values in SMALL_SETTINGS.items():
        data.setdefault(section, {}).update(values)
    config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    encoder = str(data.get("encoder", "tiny-cnn"))
    rng = np.random.default_rng(seed)
    for cancer in cancers:
        write_cohort(layout, cancer, encoder=encoder, n_patients=n_patients, dim=dim, folds=folds, rng=rng)
    return layout.root
