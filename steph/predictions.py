"""Test-set predictions and their headline metrics, in the layout's results folders.

``predictions.csv``: patient_id, t, e, risk, hazard_1..hazard_T (risk = -sum of the survival
curve, higher = riskier). ``metrics.json``: c_index (Harrell, raw days; null when undefined, with
the reason), n, events. Every stage that evaluates a model on a test split writes through here,
so ``stephctl evaluate`` reads one format.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .fileio import write_csv
from .metrics.harrell import harrell_c
from .records import MetricsRecord
from .survival import risk_score

BASE_COLUMNS = ("patient_id", "t", "e", "risk")


def prediction_columns(time_bins: int) -> list[str]:
    return [*BASE_COLUMNS, *(f"hazard_{j + 1}" for j in range(time_bins))]


def write_predictions(
    predictions_csv: Path,
    metrics_json: Path,
    *,
    ids: Sequence[str],
    times: Sequence[float] | Tensor,
    events: Sequence[int] | Tensor,
    hazards: Tensor,
    train_hazards: Tensor | None = None,
    extra_metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write predictions.csv and metrics.json (atomically); returns the metrics.

    ``train_hazards`` (the same model on its training patients) gives ``train_median_risk``,
    the cut-off evaluate uses to split test patients into low- and high-risk groups.
    """
    hazards = hazards.detach().double().cpu()
    risk = risk_score(hazards).numpy()
    t = np.asarray(torch.as_tensor(times).cpu(), dtype=np.float64)
    e = np.asarray(torch.as_tensor(events).cpu(), dtype=np.int64)
    rows = []
    for i, pid in enumerate(ids):
        rows.append([pid, _num(t[i]), int(e[i]), float(risk[i]), *(float(h) for h in hazards[i].tolist())])
    write_csv(predictions_csv, prediction_columns(hazards.shape[1]), rows)
    conc = harrell_c(t, e, risk)
    metrics: dict[str, Any] = {
        "c_index": conc.value if conc.defined else None,
        "n": len(ids),
        "events": int(e.sum()),
    }
    if not conc.defined:
        metrics["c_index_undefined_reason"] = conc.reason
    if train_hazards is not None and len(train_hazards):
        metrics["train_median_risk"] = float(risk_score(train_hazards.detach().double().cpu()).median())
    metrics.update(extra_metrics or {})
    MetricsRecord.from_json(metrics, str(metrics_json)).write(metrics_json)
    return metrics


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def format_c(value: float | None) -> str:
    return (
        "undefined" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
    )
