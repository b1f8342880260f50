"""What a model card says, gathered from a project: encoder and extraction, time bins, cohorts, metrics.

Card fields (``stephctl export``; ``export-sources`` uses the encoder, architecture and cohorts):

- ``encoder``: ``name``, ``weights`` (identity: ``sha256:<hex> (<file>)`` or the encoder's
  default such as ``random-init seed 0``), ``dim`` (D), ``patch_size``, ``target_mpp`` and
  ``extraction`` (every extraction setting that changes which patches are kept or their
  features: tissue detection, minimum tissue fraction, batch size, precision);
- ``time_bins``: ``count``, ``width_days`` and ``edges_days`` (the last bin is open-ended);
- ``cohorts``: the target's size and its training-set size per fold, each source's size;
- ``metrics``: the cross-validated summary of ``stephctl evaluate`` (mean, 95% interval, sample
  sd and per-fold values of every metric), or None when evaluate has not run;
- ``stephctl``: the versions of stephctl, torch and Python.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from ..config import ExtractConfig, ModelConfig, to_plain
from ..errors import StephError
from ..extraction.h5format import read_attrs
from ..extractors import get_encoder_spec
from ..fileio import read_csv
from ..theta0 import versions

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)

EXTRACTION_KEYS = (
    "patch_size",
    "target_mpp",
    "min_tissue_fraction",
    "batch_size",
    "precision",
    "tissue",
    "mpp_range",
)
"""Extraction settings a bundle carries; the others (device, workers, weights path, fallback MPP) are local."""


def encoder_card(layout: ProjectLayout, config: ProjectConfig, target: str, dim: int) -> dict[str, Any]:
    """The encoder and extraction the target's features were made with.

    ``patch_size``, ``target_mpp``, ``min_tissue_fraction``, the effective ``precision`` and the
    weights identity come from the attributes of one of the target's feature files when it has
    them (what extract really did), else from stephctl.yaml.
    """
    extraction = {k: v for k, v in to_plain(config.extract).items() if k in EXTRACTION_KEYS}
    weights = None
    attrs = _feature_attrs(layout, config, target)
    for key in ("patch_size", "target_mpp", "min_tissue_fraction", "precision"):
        if key in attrs:
            extraction[key] = attrs[key]  # what extract did (precision: the effective one, e.g. fp32)
    weights = attrs.get("encoder_weights")
    if weights is None:
        try:
            weights = get_encoder_spec(config.encoder).default_weights
        except StephError:
            weights = "unknown"
    return {
        "name": config.encoder,
        "weights": str(weights),
        "dim": int(dim),
        "patch_size": int(extraction["patch_size"]),
        "target_mpp": float(extraction["target_mpp"]),
        "extraction": extraction,
    }


def extract_config_of(encoder: dict[str, Any]) -> ExtractConfig:
    """The :class:`ExtractConfig` that reproduces a card's extraction (local settings at defaults)."""
    from ..config._loader import build

    return build(ExtractConfig, dict(encoder["extraction"]), "extract")


def _feature_attrs(layout: ProjectLayout, config: ProjectConfig, target: str) -> dict[str, Any]:
    from ..data import load_cohort

    try:
        cohort = load_cohort(layout, config, target)
    except StephError:
        return {}
    for patient in cohort.patients.values():
        for sid in patient.slide_ids:
            path = layout.features(config.encoder, sid, cancer=target)
            if path.suffix == ".h5" and path.is_file():
                try:
                    return read_attrs(path)
                except OSError:
                    return {}
    return {}


def time_bins_card(model: ModelConfig) -> dict[str, Any]:
    """Bins of the discrete-time survival head: bin j covers [j w, (j+1) w) days, the last is open."""
    width = float(model.bin_width_days)
    return {
        "count": int(model.time_bins),
        "width_days": width,
        "edges_days": [j * width for j in range(model.time_bins)],
        "last_open": True,
    }


def cohort_size(layout: ProjectLayout, config: ProjectConfig, cancer: str) -> int | None:
    """Number of labelled patients of ``cancer`` in the project (None without labels)."""
    from ..data import load_cohort

    try:
        return len(load_cohort(layout, config, cancer).patients)
    except StephError:
        return None


def metrics_card(layout: ProjectLayout, target: str, method: str) -> dict[str, Any] | None:
    """The cross-validated metrics of (target, method) from results/summary.csv, or None.

    ``{metric: {"mean", "ci_low", "ci_high", "std", "folds": {k: value}}}``; the interval is the
    95% bootstrap interval of the cross-fold mean written by ``stephctl evaluate``.
    """
    if not layout.summary.is_file():
        return None
    rows = [r for r in read_csv(layout.summary) if r.get("target") == target and r.get("method") == method]
    if not rows:
        return None
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        name, fold, value = row["metric"], row["fold"], _number(row["value"])
        base, _, suffix = name.partition("_ci_")
        if name.endswith("_rel_change_pct"):
            continue
        entry = out.setdefault(
            base, {"mean": None, "ci_low": None, "ci_high": None, "std": None, "folds": {}}
        )
        if fold == "mean":
            entry[f"ci_{suffix}" if suffix else "mean"] = value
        elif fold == "std" and not suffix:
            entry["std"] = value
        elif fold.isdigit() and not suffix:
            entry["folds"][fold] = value
    return out


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def software() -> dict[str, str]:
    return versions()
