"""Configuration of ``stephctl merge`` (section ``merge:``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError


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
    top_k: int | None = None
    """Number of task vectors kept per bag (None = each method's default: 5 for steph and roupkt, off for adamerging)."""
    gamma: float | Literal["auto"] = 0.005
    """Weight of the aggregation loss (z-loss + mean selected w); the authors also used 0.05. auto = chosen from gamma_grid by inner cross-validation on the target's training split."""
    gamma_grid: list[float] = field(default_factory=lambda: [0.005, 0.05])
    """Candidates for gamma: auto (the paper's two values)."""
    inner_folds: int = 3
    """Folds of the inner cross-validation of gamma: auto (within the target's training split)."""
    beta: float = 0.05
    """Weight of the mixing loss (mean selected lambda^2)."""
    epochs: int | None = None
    """Training epochs (None = train.epochs)."""
    mix: Literal["hypernet", "fnn", "fixed", "global"] = "hypernet"
    """Where lambda comes from: the hypernetwork, its fnn variant (own patch embedding), a fixed value (fixed_lambda) or one global trainable vector."""
    fixed_lambda: float = 1.0
    """lambda when mix = fixed (0 = source vectors only, 1 = target vector only)."""
    weights: Literal["hypernet", "global"] = "hypernet"
    """Where w comes from: the hypernetwork or one global trainable vector."""
    sparse: bool = True
    """Keep only the top-k mixtures (False = aggregate all sources)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Method-specific options (e.g. scale for task-arithmetic, density for ties)."""

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
