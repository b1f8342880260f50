"""Configuration of ``stephctl extract`` (section ``extract:`` of stephctl.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class TissueConfig:
    """Tissue detection on a low-resolution thumbnail."""

    thumbnail_mpp: float = 8.0
    """Resolution (microns per pixel) of the thumbnail the tissue mask is computed on."""
    saturation_threshold: float | None = None
    """HSV saturation (0-1) above which a pixel is tissue; None = Otsu on the saturation channel."""
    min_saturation: float = 0.05
    """Floor for the Otsu threshold, so an all-white slide yields no tissue."""
    max_saturation: float = 0.15
    """Ceiling for the Otsu threshold, so a slide covered by tissue is not split inside the tissue."""
    max_brightness: float = 0.92
    """Pixels brighter than this (0-1 grey value) are background whatever their saturation."""
    min_object_um2: float = 20000.0
    """Tissue components smaller than this area (square microns) are dropped as debris."""
    max_hole_um2: float = 20000.0
    """Holes inside tissue smaller than this area (square microns) are filled."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_saturation <= self.max_saturation <= 1.0:
            raise ConfigError(
                "extract.tissue: need 0 <= min_saturation <= max_saturation <= 1, "
                f"got {self.min_saturation} and {self.max_saturation}"
            )


@dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    """Whole-slide images to patch features."""

    patch_size: int = 256
    """Patch edge in pixels at the target resolution."""
    target_mpp: float = 0.5
    """Target resolution in microns per pixel (0.5 = 20x)."""
    min_tissue_fraction: float = 0.25
    """A patch is kept when at least this fraction of it is tissue."""
    mpp: float | None = None
    """Fallback slide MPP used when neither the slide nor the manifest gives one (--mpp)."""
    mpp_range: tuple[float, float] = (0.05, 16.0)
    """Plausible slide MPP for microscopy; a slide outside it is refused (e.g. a 72-dpi TIFF)."""
    weights: dict[str, str] = field(default_factory=dict)
    """Local weight files per encoder name, e.g. {uni2-h: /models/uni2-h/pytorch_model.bin}."""
    batch_size: int = 64
    """Patches per encoder forward pass."""
    workers: int | None = None
    """Threads that read and tile slides ahead of the encoder; None = one per CPU this process may use but one (2 to 16)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    """Encoder precision; auto = each encoder's declared precision on GPU, fp32 on CPU."""
    tissue: TissueConfig = field(default_factory=TissueConfig)

    def __post_init__(self) -> None:
        if self.patch_size < 16:
            raise ConfigError(f"extract.patch_size must be >= 16, got {self.patch_size}")
        if not 0 < self.target_mpp < 100:
            raise ConfigError(f"extract.target_mpp must be in (0, 100), got {self.target_mpp}")
        if not 0.0 <= self.min_tissue_fraction <= 1.0:
            raise ConfigError(
                f"extract.min_tissue_fraction must be in [0, 1], got {self.min_tissue_fraction}"
            )
        lo, hi = self.mpp_range
        if not 0 < lo < hi:
            raise ConfigError(
                f"extract.mpp_range must be two increasing positive numbers, got {self.mpp_range}"
            )
        if self.batch_size < 1 or (self.workers is not None and self.workers < 0):
            raise ConfigError("extract.batch_size must be >= 1 and extract.workers >= 0")
