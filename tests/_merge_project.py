"""A tiny trained project (6 cancers x 2 folds, D = 16) with task vectors, built once per session.

Tests copy it (:func:`project_copy`) before changing anything, so the shared original stays intact.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from _cohorts import make_feature_project

from steph.config import load_project
from steph.pipeline.task_vector import compute_task_vectors
from steph.pipeline.train_source import train_source_models

CANCERS = ("BRCA", "BLCA", "LUNG", "KIPAN", "SKCM", "UCEC")
_BUILT: dict[str, Path] = {}


def _build(root: Path) -> Path:
    make_feature_project(root, cancers=CANCERS, n_patients=16, dim=16, folds=2, seed=3)
    config_file = root / "stephctl.yaml"
    data = yaml.safe_load(config_file.read_text())
    # one epoch, no warm-up and a larger LR so that models and heads actually move
    data["train"].update({"epochs": 1, "warmup_epochs": 0, "lr": 1e-3, "device": "cpu"})
    config_file.write_text(yaml.safe_dump(data, sort_keys=False))
    layout, config = load_project(root)
    assert train_source_models(layout, config).ok
    assert compute_task_vectors(layout, config).ok
    return root


def trained_project(factory: pytest.TempPathFactory) -> Path:
    """The shared read-only project (built on first use)."""
    if "root" not in _BUILT:
        _BUILT["root"] = _build(factory.mktemp("merge-base") / "project")
    return _BUILT["root"]


def project_copy(factory: pytest.TempPathFactory, dest: Path) -> Path:
    """A private copy of the shared project at ``dest``."""
    shutil.copytree(trained_project(factory), dest)
    return dest


def files_under(root: Path, *tops: str) -> set[str]:
    return {str(p.relative_to(root)) for top in tops for p in (root / top).rglob("*") if p.is_file()}
