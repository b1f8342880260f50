"""Project A of the bundle tests: synthetic slides, tiny-cnn features, 2 folds, 1 epoch, merged.

Built once per session from slide-level TIFFs (``steph.synthetic``), so prediction in another
project re-extracts the very same slides; tests copy what they change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from steph.config import load_project
from steph.pipeline.evaluate import evaluate_models
from steph.pipeline.extract import extract_features
from steph.pipeline.merge import merge_models
from steph.pipeline.task_vector import compute_task_vectors
from steph.pipeline.train_source import train_source_models
from steph.synthetic.cohort import CancerSpec, CohortSpec, SlideSpec
from steph.synthetic.generate import generate_cohort
from steph.synthetic.project import init_configured_project

TARGET, SOURCES = "BRCA", ("BLCA", "LUAD")
OVERRIDES = {
    "model.dim_emb": 16,
    "model.dim_attn": 8,
    "model.time_bins": 8,
    "train.epochs": 1,
    "train.warmup_epochs": 0,
    "train.lr": 1e-3,
    "train.batch_size": 4,
    "train.device": "cpu",
    "extract.device": "cpu",
    "extract.patch_size": 128,
    "extract.target_mpp": 1.0,
    "extract.batch_size": 32,
    "merge.options": {"top_k": 1},
    "merge.epochs": 1,
    "evaluate.bootstrap": 20,
    "evaluate.report": False,
}
_BUILT: dict[str, Path] = {}


def spec() -> CohortSpec:
    cancers = (CancerSpec(name=TARGET, n_patients=12), *(CancerSpec(name=s, n_patients=10) for s in SOURCES))
    return CohortSpec(
        cancers=cancers,
        folds=2,
        effect_sd=2.0,
        seed=5,
        second_slide_rate=0.2,
        slides=SlideSpec(size_um=512.0),
    )


def build(root: Path) -> Path:
    init_configured_project(
        root, cancers=[TARGET, *SOURCES], encoder="tiny-cnn", overrides=OVERRIDES, note="bundle tests"
    )
    assert generate_cohort(root, spec(), level="slides", workers=1).ok
    layout, config = load_project(root)
    assert extract_features(layout, config).ok
    assert train_source_models(layout, config).ok
    assert compute_task_vectors(layout, config).ok
    assert merge_models(layout, config, target=TARGET, methods=["steph"]).ok
    assert evaluate_models(layout, config, targets=[TARGET]).ok
    return root


def project_a(factory: pytest.TempPathFactory) -> Path:
    """The shared, read-only project A (built on first use)."""
    if "root" not in _BUILT:
        _BUILT["root"] = build(factory.mktemp("bundle-a") / "A")
    return _BUILT["root"]
