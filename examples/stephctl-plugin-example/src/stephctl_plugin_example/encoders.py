"""``color-histogram``: a hand-crafted stain descriptor, registered as a stephctl encoder.

Each patch (resized to 64x64) becomes the normalised histogram of each RGB channel over
``BINS`` equal-width intensity bins::

    f[c * BINS + b] = (1 / |P|) * #{p in P : floor(BINS * x_c(p)) == b},   x in [0, 1]

so ``embed_dim = 3 * BINS = 24`` and each channel's 8 values sum to 1. It has no weights (its
weights identity says so) and runs anywhere; it is a baseline, not a foundation model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from steph.errors import EncoderUnavailableError
from steph.extractors import EncoderSpec
from steph.registry import Registry

NAME = "color-histogram"
BINS = 8


class ColorHistogram(nn.Module):
    """``[B, 3, H, W]`` images scaled to [0, 1] -> per-channel histograms ``[B, 3 * bins]``."""

    def __init__(self, bins: int = BINS) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = (x.clamp(0.0, 1.0) * self.bins).long().clamp_(max=self.bins - 1).flatten(2)  # [B, 3, HW]
        counts = torch.zeros(*index.shape[:2], self.bins, device=x.device)
        counts.scatter_add_(2, index, torch.ones_like(index, dtype=counts.dtype))
        return (counts / index.shape[-1]).flatten(1)


def build(weights: Path | None, device: torch.device) -> nn.Module:
    """The histogram module on ``device``; a weights file makes no sense for it."""
    if weights is not None:
        raise EncoderUnavailableError(
            f"encoder {NAME!r} has no weights, but the weights file {weights} was given",
            hint=f"remove `extract.weights.{NAME}` from stephctl.yaml (or drop --weights)",
        )
    return ColorHistogram().to(device).eval()


SPEC = EncoderSpec(
    name=NAME,
    embed_dim=3 * BINS,
    build=build,
    input_size=64,
    mean=(0.0, 0.0, 0.0),  # no normalisation: the module sees intensities in [0, 1]
    std=(1.0, 1.0, 1.0),
    precision="fp32",
    default_weights="none (hand-crafted colour histogram, 8 bins per channel)",
    weights_hint="none needed: the encoder has no weights",
    license="MIT",
    description="per-channel RGB histogram (3 x 8 bins) of the patch; a stain/colour baseline",
    architecture=ColorHistogram,
)


def register(registry: Registry[EncoderSpec]) -> None:
    """Entry point of ``stephctl.encoders``: add the encoder to stephctl's registry."""
    registry.add(NAME, SPEC)
