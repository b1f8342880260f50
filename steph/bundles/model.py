"""A model bundle back into a :class:`~steph.evaluation.predictors.LoadedModel`.

The bundle is verified first (:func:`~steph.bundles.container.read_bundle`); a cancer-specific
fold is its trained ABMIL (``theta0 + tau`` as trained), a merged fold is rebuilt by its method from theta0,
the task vectors and the trained weights (:func:`steph.merging.loading.rebuild_merged_model`),
exactly as in the exporting project.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard

import torch
from torch import nn

from ..config import ModelConfig
from ..config.merge import merge_config_of
from ..errors import DataError, StephError, UnknownNameError
from ..evaluation.predictors import LoadedModel
from ..layout import CANCER_SPECIFIC
from ..models.abmil import architecture_of
from ..theta0 import check_abmil_state, check_finite, check_like_theta0
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
    check_model_bundle(bundle)
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
    except (KeyError, TypeError, ValueError, RuntimeError, StephError) as exc:
        if isinstance(exc, UnknownNameError):
            raise
        detail = exc.message if isinstance(exc, StephError) else f"{type(exc).__name__}: {exc}"
        raise DataError(
            f"{bundle.path}: the model cannot be rebuilt from the bundle ({detail.splitlines()[0][:300]})",
            hint="export the model again with `stephctl export`",
        ) from exc


_ARCHITECTURE = ("dim_in", "dim_emb", "dim_attn", "time_bins")


def check_model_bundle(bundle: Bundle) -> None:
    """Check a model bundle's content, not only its hashes (a re-signed bundle has valid ones).

    theta0 is an ABMIL of the card's ``architecture`` with finite float values; ``encoder.dim``
    is its ``dim_in`` and ``time_bins.count`` its number of hazards; ``train_median_risk`` is
    None or finite; ``models`` lists at least one fold, each with its parts present, its task
    vectors (and a cancer-specific fold's weights) shaped like theta0 with finite values, the
    merged weights finite, its ``model_config`` equal to the architecture and its settings
    accepted by its merge method's own check (``top_k`` at most its number of sources ...).

    Raises:
        DataError: the first thing that is wrong, named.
    """
    card, where = bundle.card, str(bundle.path)

    def wrong(what: str) -> DataError:
        return DataError(
            f"{where}: the model card is malformed: {what}",
            hint="the bundle was not written by `stephctl export`; ask its author for an intact copy",
        )

    arch = card.get("architecture")
    if not isinstance(arch, dict) or not all(_is_int(arch.get(k)) for k in _ARCHITECTURE):
        raise wrong(f"architecture must give integer {', '.join(_ARCHITECTURE)}")
    if "theta0" not in bundle.parts:
        raise wrong("the bundle has no theta0 part")
    theta0 = bundle.parts["theta0"]
    if check_abmil_state(theta0, f"theta0 of {where}") != {k: arch[k] for k in _ARCHITECTURE}:
        raise wrong(f"architecture {arch} is not its theta0's {architecture_of(theta0)}")
    check_finite(theta0, f"theta0 of {where}")
    encoder, bins = card.get("encoder"), card.get("time_bins")
    if not isinstance(encoder, dict) or encoder.get("dim") != arch["dim_in"]:
        raise wrong(f"encoder.dim must be the model's input dimension {arch['dim_in']}")
    if not isinstance(encoder.get("name"), str) or not isinstance(encoder.get("extraction"), dict):
        raise wrong("encoder must give its name and extraction settings")
    if not isinstance(bins, dict) or bins.get("count") != arch["time_bins"]:
        raise wrong(f"time_bins.count must be the model's {arch['time_bins']} hazards")
    width = bins.get("width_days")
    if not _is_number(width) or not width > 0:
        raise wrong(f"time_bins.width_days must be a positive number, not {width!r}")
    cut = card.get("train_median_risk")
    if cut is not None and not _is_number(cut):
        raise wrong(f"train_median_risk must be a finite number or null, not {cut!r}")
    models = card.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, dict) for m in models):
        raise wrong("models must list at least one fold")
    for entry in models:
        _check_fold(bundle, entry, theta0, arch, wrong)


def _check_fold(
    bundle: Bundle,
    entry: dict[str, Any],
    theta0: dict[str, torch.Tensor],
    arch: dict[str, int],
    wrong: Callable[[str], DataError],
) -> None:
    where = str(bundle.path)
    fold = entry.get("fold")
    if not _is_int(fold):
        raise wrong(f"a model's fold must be an integer, not {fold!r}")
    name = f"fold {fold}"
    sources = entry.get("source_vectors") or {}
    if not isinstance(sources, dict):
        raise wrong(f"{name}: source_vectors must map cancers to parts")
    for part in (entry.get("target_vector"), entry.get("weights"), *sources.values()):
        if not isinstance(part, str) or part not in bundle.parts:
            raise wrong(f"{name}: part {part!r} is not in the bundle")
    for part in (entry["target_vector"], *sources.values()):
        check_like_theta0(bundle.parts[part], theta0, f"{where}: {part}")
    weights = bundle.parts[entry["weights"]]
    if entry.get("method") == CANCER_SPECIFIC:
        check_like_theta0(weights, theta0, f"{where}: {entry['weights']}")
    else:
        check_finite(weights, f"{where}: {entry['weights']}")
    model = entry.get("model_config")
    if not isinstance(model, dict) or entry.get("dim_in") != arch["dim_in"]:
        raise wrong(f"{name}: model_config and dim_in must be given")
    diff = [k for k in ("dim_emb", "dim_attn", "time_bins") if model.get(k) != arch[k]]
    if diff:
        raise wrong(f"{name}: model_config {', '.join(diff)} differ from the architecture {arch}")
    if entry.get("method") != CANCER_SPECIFIC:
        _check_settings(entry, len(sources), name, wrong)


def _check_settings(
    entry: dict[str, Any], n_sources: int, name: str, wrong: Callable[[str], DataError]
) -> None:
    """The merge method's own check of its settings against the fold's sources (``top_k`` ...)."""
    from ..merging import MERGE_METHODS

    settings = entry.get("settings")
    if not isinstance(settings, dict) or not isinstance(entry.get("method"), str):
        raise wrong(f"{name}: method and settings must be given")
    if entry["method"] not in MERGE_METHODS:
        return  # rebuilding names the missing plugin
    try:
        MERGE_METHODS.get(entry["method"]).check(merge_config_of(settings), n_sources)
    except (TypeError, ValueError, StephError) as exc:
        detail = exc.message if isinstance(exc, StephError) else str(exc)
        raise wrong(f"{name}: settings of {entry['method']}: {detail}") from exc


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
