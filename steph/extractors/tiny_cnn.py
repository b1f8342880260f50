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
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised images -> ``[B, 128]``."""
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x)).flatten(2)
        return torch.cat([x.mean(dim=2), x.std(dim=2, unbiased=False)], dim=1)


def build(weights: Path | None, device: torch.device) -> nn.Module:
    model = TinyCNN()
    if weights is not None:
        load_strict(model, Path(weights), name=NAME)
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
