"""Configuration of ``stephctl merge`` (section ``merge:``).

Three layers, each winning over the one before it, for the settings of one merge method
(:mod:`steph.merging.settings`):

1. the method's own defaults (its settings dataclass);
2. the general fields below that a method setting mirrors (``top_k``, ``gamma``, ``mix`` ...,
   marked :func:`method_layer`) and ``merge.options``: shared by every method that reads them;
3. the method's own block, ``merge.<method>: {...}`` (``merge: {steph: {top_k: 2}, ties:
   {density: 0.2}}``), kept in :attr:`MergeConfig.per_method` and checked against that
   method's settings dataclass before any work.

Command-line flags (``--top-k``, ``--option KEY=VALUE``) replace the same key in every block
(:func:`command_line_wins`), so a flag always wins over stephctl.yaml; ``--option
METHOD.KEY=VALUE`` sets one method's block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

from ..errors import ConfigError

LAYER = "method_setting"
"""Field metadata key: the field is the general layer of a method setting of the same name."""


def method_layer(flag_help: str) -> dict[str, Any]:
    """Metadata of a ``merge:`` field that methods' settings of the same name read; ``flag_help``
    is its ``stephctl merge`` flag's help."""
    return {LAYER: True, "flag_help": flag_help}


@dataclass(frozen=True, kw_only=True)
class MergeConfig:
    """STEPH and the baselines (STEPH_SPEC sections 6-7)."""

    method: str = "steph"
    """Merge method (stephctl merge --list-methods)."""
    sources: list[str] | None = None
    """Source cancers (None = every cancer of the project except the target)."""
    source_fold: int = 0
    """Fold of the source models' task vectors (the reference uses fold 0 for every target fold)."""
    folds: list[int] | None = None
    """Target folds to merge (None = every fold with a target task vector)."""
    top_k: int | None = field(
        default=None, metadata=method_layer("Mixed task vectors kept per bag (steph, roupkt).")
    )
    """Number of task vectors kept per bag (None = each method's default: 5 for steph and roupkt, off for adamerging)."""
    gamma: float | Literal["auto"] = field(
        default=0.005,
        metadata=method_layer(
            "Aggregation loss weight (0.005; also 0.05), or auto: chosen from merge.gamma_grid by "
            "inner cross-validation on the target's training split."
        ),
    )
    """Weight of the aggregation loss (z-loss + mean selected w); the authors also used 0.05. auto = chosen from gamma_grid by inner cross-validation on the target's training split."""
    gamma_grid: list[float] = field(default_factory=lambda: [0.005, 0.05])
    """Candidates for gamma: auto (the paper's two values)."""
    inner_folds: int = 3
    """Folds of the inner cross-validation of gamma: auto (within the target's training split)."""
    beta: float = field(default=0.05, metadata=method_layer("Mixing loss weight (0.05)."))
    """Weight of the mixing loss (mean selected lambda^2)."""
    epochs: int | None = None
    """Training epochs (None = train.epochs)."""
    mix: Literal["hypernet", "fnn", "fixed", "global"] = field(
        default="hypernet", metadata=method_layer("lambda from: hypernet, fixed or global (ablation).")
    )
    """Where lambda comes from: the hypernetwork, its fnn variant (own patch embedding), a fixed value (fixed_lambda) or one global trainable vector."""
    fixed_lambda: float = field(
        default=1.0, metadata=method_layer("lambda with --mix fixed: 0 = sources only, 1 = target only.")
    )
    """lambda when mix = fixed (0 = source vectors only, 1 = target vector only)."""
    weights: Literal["hypernet", "global"] = field(
        default="hypernet", metadata=method_layer("w from: hypernet or global (ablation).")
    )
    """Where w comes from: the hypernetwork or one global trainable vector."""
    sparse: bool = field(
        default=True, metadata=method_layer("Keep the top-k mixtures (--no-sparse: all sources).")
    )
    """Keep only the top-k mixtures (False = aggregate all sources)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Method-specific options (e.g. scale for task-arithmetic, density for ties)."""
    per_method: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"key": "merge.<method>", "type": "dict[str, Any] per method"}
    )
    """One method's own settings, written merge.<method>: {key: value} (e.g. steph: {top_k: 2}, ties: {density: 0.2}); they win over the general fields above and merge.options for that method (stephctl merge --list-methods lists each method's settings)."""

    BLOCKS: ClassVar[str] = "per_method"
    """Keys of ``merge:`` that are no field and hold a mapping are method blocks, kept here."""

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"merge.top_k must be >= 1, got {self.top_k}")
        if self.source_fold < 0:
            raise ConfigError(f"merge.source_fold must be >= 0, got {self.source_fold}")
        if not 0.0 <= self.fixed_lambda <= 1.0:
            raise ConfigError(f"merge.fixed_lambda must be in [0, 1], got {self.fixed_lambda}")
        if self.gamma != "auto" and (isinstance(self.gamma, str) or self.gamma < 0):
            raise ConfigError(f"merge.gamma must be >= 0 or auto, got {self.gamma!r}")
        if self.beta < 0:
            raise ConfigError("merge.beta must be >= 0")
        if not self.gamma_grid or any(g < 0 for g in self.gamma_grid):
            raise ConfigError(f"merge.gamma_grid must list values >= 0, got {self.gamma_grid}")
        if self.inner_folds < 2:
            raise ConfigError(f"merge.inner_folds must be >= 2, got {self.inner_folds}")
        for name, block in self.per_method.items():
            if not isinstance(block, Mapping):
                raise ConfigError(f"merge.{name}: expected a mapping of settings, got {block!r}")


def method_layer_fields() -> tuple[str, ...]:
    """``merge:`` fields that are the general layer of a method setting (:func:`method_layer`)."""
    return tuple(f.name for f in fields(MergeConfig) if f.metadata.get(LAYER))


def command_line_wins(data: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Drop from every ``merge.<method>`` block of ``data`` (stephctl.yaml) the keys that the
    command line sets for all methods (``merge.<field>``, ``merge.options.<key>``), so a flag wins
    over the file's blocks as over its general fields."""
    section = data.get("merge")
    if not isinstance(section, dict):
        return
    names = {f.name for f in fields(MergeConfig)}
    keys = set()
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if value is None or parts[0] != "merge":
            continue
        if len(parts) == 2 and parts[1] in names:
            keys.add(parts[1])
        elif len(parts) == 3 and parts[1] == "options":
            keys.add(parts[2])
    blocks = [v for k, v in section.items() if k not in names and isinstance(v, dict)]
    blocks += [v for v in (section.get(MergeConfig.BLOCKS) or {}).values() if isinstance(v, dict)]
    for block in blocks:
        for key in keys & set(block):
            del block[key]
