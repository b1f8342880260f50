"""Configuration of ``stephctl transfer`` (section ``transfer:``), the transferability study."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class TransferConfig:
    """Zero-shot transfer matrix, its intervals and the factor analysis (docs/transfer.md)."""

    bootstrap: int = 200
    """Bootstrap resamples of each target fold's test patients for the C-index and gain intervals (0 = none)."""
    confidence: float = 0.95
    """Coverage of the bootstrap intervals; a gain whose interval excludes 0 is positive or negative transfer."""
    seed: int = 42
    """Seed of the bootstrap and the permutation tests."""
    permutations: int = 2000
    """Permutations of the factor values over pairs for the Spearman p-values."""
    mmd_bandwidth: float | None = None
    """Bandwidth sigma of the Gaussian kernel of the feature-distribution MMD (None = the median distance between the two cancers' patient-mean features)."""

    def __post_init__(self) -> None:
        if self.bootstrap < 0:
            raise ConfigError("transfer.bootstrap must be >= 0")
        if not 0.5 < self.confidence < 1.0:
            raise ConfigError(f"transfer.confidence must be in (0.5, 1), got {self.confidence}")
        if self.permutations < 0:
            raise ConfigError("transfer.permutations must be >= 0")
        if self.mmd_bandwidth is not None and self.mmd_bandwidth <= 0:
            raise ConfigError(f"transfer.mmd_bandwidth must be > 0, got {self.mmd_bandwidth}")
