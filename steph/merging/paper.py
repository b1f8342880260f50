"""The paper's comparison set (``stephctl merge --target T --paper``) and its table rows.

Each :class:`Variant` is a merge method with the ``merge:`` settings that make one row of the
paper's main and ablation tables. Settings given on the command line (``--top-k``, ``--gamma``,
``--epochs`` ...) apply to every variant that reads them; a variant's own settings win.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from ..config.merge import MergeConfig
from .settings import fold_block


@dataclass(frozen=True)
class Variant:
    """One row: its label in the paper, the method and its settings (``merge.options`` keys)."""

    label: str
    method: str
    overrides: dict[str, Any] = field(default_factory=dict)
    group: str = "merging"

    def apply(self, merge: MergeConfig) -> MergeConfig:
        """``merge`` with the method's own block ``merge.<method>`` folded in, then this
        variant's settings set in ``merge.options`` (they win: they make the row; None removes
        the key, the method's default)."""
        merge = fold_block(merge, self.method)
        options = {**merge.options, **self.overrides}
        return replace(merge, method=self.method, options={k: v for k, v in options.items() if v is not None})


HYPERNET = {"hypernet": True}

PAPER_VARIANTS: tuple[Variant, ...] = (
    Variant("Model Avg.", "model-avg", group="model merging"),
    Variant("AdaMerging", "adamerging", group="model merging"),
    Variant("AdaMerging + hypernetwork", "adamerging", HYPERNET, group="model merging"),
    Variant("TIES AM", "ties-adamerging", group="model merging"),
    Variant("TIES AM + hypernetwork", "ties-adamerging", HYPERNET, group="model merging"),
    Variant("Surgery AM", "surgery-adamerging", group="model merging"),
    Variant("Surgery AM + hypernetwork", "surgery-adamerging", HYPERNET, group="model merging"),
    Variant("Iso-C AM", "iso-c-adamerging", group="model merging"),
    Variant("Iso-C AM + hypernetwork", "iso-c-adamerging", HYPERNET, group="model merging"),
    Variant("ROUPKT", "roupkt", group="representation transfer"),
    Variant("STEPH", "steph", group="STEPH"),
    Variant(
        "lambda = 0 (sources only)", "steph", {"mix": "fixed", "fixed_lambda": 0.0}, group="STEPH ablations"
    ),
    Variant(
        "lambda = 1 (target only)", "steph", {"mix": "fixed", "fixed_lambda": 1.0}, group="STEPH ablations"
    ),
    Variant("lambda a global vector", "steph", {"mix": "global"}, group="STEPH ablations"),
    Variant("no sparsity (all sources)", "steph", {"sparse": False, "top_k": None}, group="STEPH ablations"),
    Variant("w a global vector", "steph", {"weights": "global"}, group="STEPH ablations"),
)
"""The paper's comparison set. "Model Avg. + hypernetwork" is not a separate run: per-patient
hypernetwork coefficients over the raw task vectors are exactly "AdaMerging + hypernetwork"
(the reference's ``ADA-dynamic`` has no averaging mode)."""

CANCER_SPECIFIC = ("Cancer-specific", "cancer-specific")
"""The paper's first row: the target's own model, written by ``stephctl train-source``."""


PAPER_RUNS: dict[str, str] = {
    "cancer-specific": "Cancer-specific",
    "model-avg": "Model Avg.",
    "adamerging": "AdaMerging",
    "adamerging-hypernet": "AdaMerging + hypernetwork",
    "ties-adamerging": "TIES AM",
    "ties-adamerging-hypernet": "TIES AM + hypernetwork",
    "surgery-adamerging": "Surgery AM",
    "surgery-adamerging-hypernet": "Surgery AM + hypernetwork",
    "iso-c-adamerging": "Iso-C AM",
    "iso-c-adamerging-hypernet": "Iso-C AM + hypernetwork",
    "roupkt": "ROUPKT",
    "steph": "STEPH",
    "steph-fixed-lambda0": "STEPH, lambda = 0 (sources only)",
    "steph-fixed-lambda1": "STEPH, lambda = 1 (target only)",
    "steph-global-lambda": "STEPH, lambda a global vector",
    "steph-dense": "STEPH, no sparsity (all sources)",
    "steph-global-w": "STEPH, w a global vector",
}
"""Folder name (with the paper's default settings) -> row label, in the paper's order. Folders
with a ``-top<k>`` or ``-gamma<g>`` suffix map to the same row (:func:`paper_row`)."""


def paper_row(run: str) -> str | None:
    """The paper row of a results folder: ``steph-top3`` -> ``STEPH``; None when it is none.

    >>> paper_row("steph-global-w-top3-gamma0.05"), paper_row("ties-adamerging-gamma-auto-hypernet")
    ('STEPH, w a global vector', 'TIES AM + hypernetwork')
    """
    return PAPER_RUNS.get(_TUNED.sub("", run))


_TUNED = re.compile(r"-(top\d+|gamma-auto|gamma\d[\d.]*(e-?\d+)?)(?=-|$)")
