"""Configuration of ``stephctl evaluate`` (section ``evaluate:``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """Survival metrics, cross-fold tables and reports."""

    bootstrap: int = 1000
    """Bootstrap resamples for the 95% intervals (0 = no intervals)."""
    seed: int = 42
    confidence: float = 0.95
    auc_years: list[float] = field(default_factory=lambda: [1.0, 3.0, 5.0])
    """Horizons (years) of the time-dependent AUC."""
    reference_method: str = "cancer-specific"
    """Method the relative change is computed against."""
    report: bool = True
    """Write reports/<TARGET>/ (HTML + PNG plots)."""

    def __post_init__(self) -> None:
        if self.bootstrap < 0:
            raise ConfigError("evaluate.bootstrap must be >= 0")
        if not 0.5 < self.confidence < 1.0:
            raise ConfigError(f"evaluate.confidence must be in (0.5, 1), got {self.confidence}")
