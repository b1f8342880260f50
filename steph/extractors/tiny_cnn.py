"""``tiny-cnn``: the built-in CPU encoder (deterministic random weights, 128-d).

It is NOT a pathology foundation model. It exists so that a new project extracts features out
of the box, in tests and in the synthetic demo, on a laptop CPU. Its weights are a fixed
function of ``SEED`` (recorded as ``random-init seed 0`` in every feature file), so two
machines produce the same features.

Architecture (patches resized to 64x64 with an antialiased bilinear filter, then ImageNet-normalised)::

    conv3x3/2 3->16 + ReLU  ->  conv3x3/2 16->32 + ReLU  ->  conv3x3/2 32->64 + ReLU
    ->  [spatial mean (64), spatial standard deviation (64)]  =  128-d

The mean pool carries colour and stain intensity; the standard-deviation pool carries texture
(how unevenly random edge and blob detectors fire across the patch), which is what separates
tissue phenotypes in the synthetic cohorts. About 3 M multiply-adds per patch.

Raw random-conv features are badly conditioned (per-dimension means up to ~3 next to standard
deviations of 1e-4), which an ABMIL's first projection cannot use. So the output is standardised
per dimension, ``f = (g - m) / max(s, floor)``, with ``m`` and ``s`` the mean and standard
deviation of ``g`` over a fixed, seeded calibration set of H&E-coloured random textures
(computed once at construction, like the weights; ``floor`` = 5% of the median ``s``). Like the
weights, the statistics are a deterministic function of ``SEED``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec
from .weights import load_strict

NAME = "tiny-cnn"
SEED = 0
EMBED_DIM = 128
INPUT_SIZE = 64


class TinyCNN(nn.Module):
    """Three strided random conv layers with mean + standard-deviation pooling."""

    feature_mean: torch.Tensor
    feature_scale: torch.Tensor

    def __init__(self, seed: int = SEED) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, EMBED_DIM // 2, 3, stride=2, padding=1)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2, self.conv3):
                fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                bias = conv.bias
                assert bias is not None  # built with bias=True
                bias.copy_(torch.randn(bias.shape, generator=generator) * 0.1)

        self.register_buffer("feature_mean", torch.zeros(EMBED_DIM), persistent=False)
        self.register_buffer("feature_scale", torch.ones(EMBED_DIM), persistent=False)
        self.calibrate(calibration_images(seed=seed))

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        """Un-standardised ``[B, 128]`` (spatial mean and standard deviation of the last conv)."""
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x)).flatten(2)
        return torch.cat([x.mean(dim=2), x.std(dim=2, unbiased=False)], dim=1)

    @torch.no_grad()
    def calibrate(self, images: torch.Tensor) -> None:
        """Set the per-dimension standardisation from ``images`` (normalised, ``[N, 3, H, W]``)."""
        raw = self.raw_features(images)
        std = raw.std(dim=0)
        self.feature_mean.copy_(raw.mean(dim=0))
        self.feature_scale.copy_(std.clamp(min=0.05 * float(std.median())))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised images -> ``[B, 128]`` standardised features."""
        return (self.raw_features(x) - self.feature_mean) / self.feature_scale


_HE_PALETTE = (
    (0.96, 0.95, 0.96),  # background / fat
    (0.90, 0.62, 0.78),  # eosin-rich stroma
    (0.78, 0.45, 0.66),  # dense eosin
    (0.50, 0.30, 0.62),  # haematoxylin (nuclei)
    (0.30, 0.16, 0.45),  # dark nuclei
    (0.80, 0.30, 0.35),  # blood
    (0.70, 0.72, 0.85),  # mucin
)


def calibration_images(n: int = 256, size: int = INPUT_SIZE, seed: int = SEED) -> torch.Tensor:
    """``n`` seeded random textures in H&E colours, ImageNet-normalised ``[n, 3, size, size]``.

    Each image mixes the palette colours with random low-frequency weights (a 4x4 to 16x16 grid
    upsampled bilinearly) plus pixel noise: smooth regions, edges and blobs at several scales.
    """
    generator = torch.Generator().manual_seed(10_000 + seed)
    palette = torch.tensor(_HE_PALETTE)
    images = []
    for i in range(n):
        cells = (4, 8, 16)[i % 3]
        logits = torch.randn(1, len(_HE_PALETTE), cells, cells, generator=generator) * 3.0
        weights = torch.nn.functional.interpolate(
            logits, size=(size, size), mode="bilinear", align_corners=False
        )
        mix = torch.softmax(weights, dim=1)[0]  # [P, H, W]
        rgb = torch.einsum("phw,pc->chw", mix, palette)
        rgb = (rgb + 0.04 * torch.randn(rgb.shape, generator=generator)).clamp(0.0, 1.0)
        images.append(rgb)
    batch = torch.stack(images)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (batch - mean) / std


def build(weights: Path | None, device: torch.device) -> nn.Module:
    model = TinyCNN()
    if weights is not None:
        load_strict(model, Path(weights), name=NAME)
        model.calibrate(calibration_images())  # the standardisation belongs to these weights
    return model.to(device).eval()


SPEC = EncoderSpec(
    name=NAME,
    embed_dim=EMBED_DIM,
    build=build,
    input_size=INPUT_SIZE,
    interpolation="bilinear",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    precision="fp32",
    default_weights=f"random-init seed {SEED}",
    weights_hint="none needed: the weights are a deterministic random initialisation",
    license="MIT (part of stephctl)",
    gated=False,
    description="built-in CPU encoder: deterministic random conv features (not a foundation model)",
    architecture=TinyCNN,
)
