"""A model bundle back into a :class:`~steph.evaluation.predictors.LoadedModel`.

The bundle is verified first (:func:`~steph.bundles.container.read_bundle`); a cancer-specific
fold is its trained ABMIL (``theta0 + tau`` as trained), a merged fold is rebuilt by its method from theta0,
the task vectors and the trained weights (:func:`steph.merging.loading.rebuild_merged_model`),
exactly as in the exporting project.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..config.merge import merge_config_of
from ..errors import DataError
from ..evaluation.predictors import LoadedModel
from ..layout import CANCER_SPECIFIC
from .card import extract_config_of
from .container import Bundle, read_bundle


def load_bundle_model(
    path: Path | str, *, device: torch.device, weights_file: Path | None = None
) -> LoadedModel:
    """Read, verify and rebuild the model of a bundle.

    Args:
        weights_file: a local file of the bundle's encoder weights (checked when extracting).

    Raises:
        MissingArtifactError, DataError, ConsistencyError: see ``read_bundle``; also a card
            whose model entries are malformed.
        UnknownNameError: the bundle's merge method is not installed here (a plugin).
    """
    bundle = read_bundle(path, kind="model")
    card = bundle.card
    try:
        modules = tuple((int(entry["fold"]), _fold_module(bundle, entry, device)) for entry in card["models"])
        encoder = card["encoder"]
        bins = card["time_bins"]
        cut = card.get("train_median_risk")
        return LoadedModel(
            name=bundle.path.name.removesuffix(".safetensors"),
            modules=modules,
            encoder=str(encoder["name"]),
            encoder_weights=str(encoder["weights"]),
            encoder_weights_file=weights_file,
            extraction=extract_config_of(encoder),
            dim_in=int(encoder["dim"]),
            time_bins=int(bins["count"]),
            bin_width_days=float(bins["width_days"]),
            train_median_risk=None if cut is None else float(cut),
            identity={"bundle": str(bundle.path), "bundle_sha256": bundle.sha256, "card": card},
            sources={
                int(entry["fold"]): tuple(str(name) for name in dict(entry.get("source_vectors") or {}))
                for entry in card["models"]
            },
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{bundle.path}: the model card is incomplete ({type(exc).__name__}: {exc})",
            hint="export the model again with `stephctl export`",
        ) from exc


def _fold_module(bundle: Bundle, entry: dict[str, Any], device: torch.device) -> nn.Module:
    theta0, target_vector = bundle.parts["theta0"], bundle.parts[entry["target_vector"]]
    model_config = ModelConfig(**entry["model_config"])
    if entry["method"] == CANCER_SPECIFIC:  # the trained ABMIL (= theta0 + tau, as trained)
        from ..models.abmil import create_abmil

        model = create_abmil(int(entry["dim_in"]), model_config)
        model.load_state_dict(bundle.parts[entry["weights"]])
        return model.to(device).eval()
    from ..merging.loading import MergedParts, rebuild_merged_model

    sources = dict(entry["source_vectors"])
    parts = MergedParts(
        method=str(entry["method"]),
        run=str(bundle.card["method"]["run"]),
        target=str(bundle.card["target"]),
        fold=int(entry["fold"]),
        theta0=theta0,
        theta0_sha256=str(bundle.card["theta0_sha256"]),
        target_vector=target_vector,
        source_names=tuple(sources),
        source_vectors=tuple(bundle.parts[p] for p in sources.values()),
        vector_hashes=dict(entry.get("vector_sha256", {})),
        merge_config=merge_config_of(entry["settings"]),
        model_config=model_config,
        dim_in=int(entry["dim_in"]),
        seed=int(entry["seed"]),
        state=bundle.parts[entry["weights"]],
    )
    return rebuild_merged_model(parts, device, where=str(bundle.path))
