"""Bundles written the way a hostile lab would: valid hashes (re-signed), crafted content.

``write_bundle`` recomputes every part hash and the card hash, so a bundle made here passes the
tamper checks; what it holds is up to the test. Lab B is a feature-level synthetic project with
tiny-cnn's D = 128 and the small architecture of tests/_bundle_project.py.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from _bundle_project import OVERRIDES
from torch import Tensor

from steph.bundles.container import write_bundle
from steph.checkpoints import state_sha256
from steph.config import ModelConfig
from steph.models.abmil import architecture_of, create_abmil
from steph.synthetic.cohort import CancerSpec, CohortSpec, FeatureSpec
from steph.synthetic.generate import generate_cohort
from steph.synthetic.project import init_configured_project

OWN = "COAD"
SMALL = ModelConfig(dim_emb=16, dim_attn=8, time_bins=8)
THETA0_META = {"kind": "theta0"}


def abmil_state(seed: int = 0, dim_in: int = 128, model: ModelConfig = SMALL) -> dict[str, Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return {k: v.detach().clone() for k, v in create_abmil(dim_in, model).state_dict().items()}


def vector_like(theta0: Mapping[str, Tensor], seed: int = 1) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: 0.01 * torch.randn(v.shape, generator=gen) for k, v in theta0.items()}


def sources_card(theta0: Mapping[str, Tensor], cancers: Mapping[str, list[int]]) -> dict[str, Any]:
    return {
        "theta0_sha256": state_sha256(theta0, THETA0_META),
        "architecture": architecture_of(theta0),
        "encoder": {
            "name": "tiny-cnn",
            "weights": "random-init seed 0",
            "dim": 128,
            "patch_size": 128,
            "target_mpp": 1.0,
            "extraction": {"patch_size": 128, "target_mpp": 1.0},
        },
        "sources": {
            c: {"patients": 10, "folds": folds, "train_patients_per_fold": {str(k): 5 for k in folds}}
            for c, folds in cancers.items()
        },
        "stephctl": {"stephctl": "0"},
        "created": "2026-01-01T00:00:00+0000",
    }


def write_sources(
    path: Path,
    *,
    theta0: Mapping[str, Tensor] | None = None,
    vectors: Mapping[str, Mapping[str, Tensor]] | None = None,
    card: Mapping[str, Any] | None = None,
) -> Path:
    """A sources bundle: ``vectors`` maps part names (``task_vector/BLCA/fold_0``) to state dicts."""
    theta0 = dict(theta0 if theta0 is not None else abmil_state())
    if vectors is None:
        vectors = {"task_vector/BLCA/fold_0": vector_like(theta0)}
    if card is None:
        cancers: dict[str, list[int]] = {}
        for part in vectors:
            _, cancer, fold = part.split("/", 2)
            cancers.setdefault(cancer, []).append(int(fold.rsplit("_", 1)[1]))
        card = sources_card(theta0, cancers)
    write_bundle(path, "sources", {"theta0": theta0, **vectors}, copy.deepcopy(dict(card)))
    return path


def lab_b(root: Path, **overrides: object) -> Path:
    init_configured_project(
        root, cancers=[OWN], encoder="tiny-cnn", overrides={**OVERRIDES, **overrides}, note="lab B"
    )
    spec = CohortSpec(
        cancers=(CancerSpec(name=OWN, n_patients=10),),
        folds=2,
        seed=9,
        features=FeatureSpec(dim=128, patches=(4, 8)),
    )
    assert generate_cohort(root, spec, level="features", encoder="tiny-cnn").ok
    return root


def _merged_weights(theta0, target_vector, sources, settings) -> dict[str, Tensor]:
    from steph.config.merge import merge_config_of
    from steph.merging import MERGE_METHODS
    from steph.merging.base import FitSettings, MergeContext

    ctx = MergeContext(
        target="BRCA",
        fold=0,
        theta0=theta0,
        target_vector=target_vector,
        source_names=tuple(sources),
        source_vectors=tuple(sources.values()),
        config=merge_config_of(settings),
        model_config=SMALL,
        dim_in=int(theta0["feat_proj.0.weight"].shape[1]),
        device=torch.device("cpu"),
        seed=0,
        fit_settings=FitSettings(epochs=0),
    )
    model = MERGE_METHODS.get(settings["method"]).build(ctx)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def model_bundle_parts(
    method: str = "cancer-specific", *, dim_in: int = 128, encoder: Mapping[str, Any] | None = None
) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
    """Parts and card of a one-fold model bundle of BRCA (``cancer-specific`` or ``steph`` top-1)."""
    from steph.config import to_plain
    from steph.config.merge import merge_config_of

    theta0 = abmil_state(dim_in=dim_in)
    tau = vector_like(theta0, seed=2)
    parts: dict[str, dict[str, Tensor]] = {"theta0": theta0, "task_vector/BRCA/fold_0": tau}
    entry: dict[str, Any] = {
        "fold": 0,
        "target_vector": "task_vector/BRCA/fold_0",
        "source_vectors": {},
        "weights": "weights/fold_0",
        "method": method,
        "seed": 0,
        "dim_in": dim_in,
        "n_train": 5,
        "model_config": to_plain(SMALL),
    }
    if method == "cancer-specific":
        parts["weights/fold_0"] = {k: theta0[k] + tau[k] for k in theta0}
        entry["settings"] = {}
    else:
        sources = {c: vector_like(theta0, seed=3 + i) for i, c in enumerate(("BLCA", "LUAD"))}
        settings = {"method": method, "top_k": 1}
        for c, v in sources.items():
            parts[f"task_vector/{c}/fold_0"] = v
        entry["source_vectors"] = {c: f"task_vector/{c}/fold_0" for c in sources}
        parts["weights/fold_0"] = _merged_weights(theta0, tau, sources, settings)
        entry["settings"] = to_plain(merge_config_of(settings))
    card = {
        "target": "BRCA",
        "method": {"name": method, "run": method, "settings": entry["settings"], "model": to_plain(SMALL)},
        "architecture": architecture_of(theta0),
        "theta0_sha256": state_sha256(theta0, THETA0_META),
        "encoder": {**sources_card(theta0, {})["encoder"], "dim": dim_in, **(encoder or {})},
        "time_bins": {
            "count": 8,
            "width_days": 365.0,
            "edges_days": [365.0 * j for j in range(8)],
            "last_open": True,
        },
        "folds": [0],
        "ensemble": False,
        "train_median_risk": -4.0,
        "models": [entry],
    }
    return parts, card
