"""The paper's comparison set (``stephctl merge --target T --paper``) and its table rows.

Each :class:`Variant` is a merge method with the ``merge:`` settings that make one row of the
paper's main and ablation tables. Settings given on the command line (``--top-k``, ``--gamma``,
``--epochs`` ...) apply to every variant that reads them; a variant's own settings win.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..config.merge import MergeConfig


@dataclass(frozen=True)
class Variant:
    """One row: its label in the paper, the method and the ``merge:`` overrides."""

    label: str
    method: str
    overrides: dict[str, Any] = field(default_factory=dict)
    group: str = "merging"

    def apply(self, merge: MergeConfig) -> MergeConfig:
        """``merge`` with this variant's fields and options set."""
        fields = {k: v for k, v in self.overrides.items() if k != "options"}
        options = {**merge.options, **self.overrides.get("options", {})}
        return replace(merge, method=self.method, options=options, **fields)


HYPERNET = {"options": {"hypernet": True}}

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
