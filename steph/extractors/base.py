"""The encoder contract: a frozen :class:`EncoderSpec` (what an encoder *is*) and a loaded
:class:`Encoder` (a built module on a device that turns uint8 patches into features).

An encoder declares everything downstream stages need without loading weights: its output
dimension, input size, normalisation, precision, where its weights come from and under which
licence. ``build(weights, device)`` creates the module lazily; heavy imports (timm) happen
inside it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ConsistencyError

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "bf16"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

BuildFn = Callable[[Path | None, torch.device], nn.Module]


@dataclass(frozen=True, kw_only=True)
class EncoderSpec:
    """Declaration of a patch encoder (registered in :data:`steph.extractors.ENCODERS`).

    ``build(weights, device)`` returns an ``nn.Module`` in eval mode whose forward maps a
    normalised float batch ``[B, 3, S, S]`` to features ``[B, embed_dim]``. ``weights`` is a
    local weights file or None (then the encoder uses ``default_weights``: the hub, or its
    deterministic random initialisation). It raises
    :class:`~steph.errors.EncoderUnavailableError` when the weights cannot be had.
    """

    name: str
    """Registry name, also the features folder name."""
    embed_dim: int
    """Length of one patch feature vector."""
    build: BuildFn = field(repr=False, compare=False)
    """Lazy factory ``(weights file or None, device) -> nn.Module``."""
    input_size: int | None = 224
    """Square input edge in pixels; patches are resized to it. None = patches go in as cut."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    """Per-channel normalisation mean (RGB, 0-1 scale)."""
    std: tuple[float, float, float] = IMAGENET_STD
    """Per-channel normalisation standard deviation."""
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    """Resampling used to resize patches to ``input_size`` (antialiased)."""
    crop_pct: float = 1.0
    """timm's convention: resize to ``input_size / crop_pct``, then centre-crop ``input_size``."""
    precision: Precision = "fp32"
    """Precision on GPU (autocast); CPU runs fp32 unless the config asks otherwise."""
    default_weights: str = ""
    """Weights identity without a local file: ``hf-hub:<org>/<repo>`` or ``random-init seed N``."""
    weights_hint: str = ""
    """Where to obtain the weights file (shown when it is missing)."""
    license: str = ""
    """Licence of the weights."""
    gated: bool = False
    """True when the weights need an access request on the hub."""
    description: str = ""
    """One line for ``stephctl extract --list-encoders``."""
    architecture: Callable[[], nn.Module] | None = field(default=None, repr=False, compare=False)
    """Randomly initialised architecture without weights (tests, shape checks); None if n/a."""

    def __post_init__(self) -> None:
        if self.embed_dim < 1:
            raise ConfigError(f"encoder {self.name!r}: embed_dim must be >= 1, got {self.embed_dim}")
        if self.input_size is not None and self.input_size < 8:
            raise ConfigError(f"encoder {self.name!r}: input_size must be >= 8, got {self.input_size}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"encoder {self.name!r}: crop_pct must be in (0, 1], got {self.crop_pct}")

    def describe(self) -> dict[str, object]:
        """A JSON-able summary (the ``--list-encoders`` row)."""
        return {
            "name": self.name,
            "embed_dim": self.embed_dim,
            "input_size": self.input_size,
            "precision": self.precision,
            "weights": self.default_weights,
            "license": self.license,
            "gated": self.gated,
            "description": self.description,
        }


def resolve_dtype(precision: str, spec: EncoderSpec, device: torch.device) -> torch.dtype:
    """``auto`` = the encoder's declared precision on CUDA and fp32 elsewhere."""
    if precision == "auto":
        precision = spec.precision if device.type == "cuda" else "fp32"
    if precision not in _DTYPES:
        raise ConfigError(f"extract.precision: {precision!r} is not one of auto, fp32, fp16, bf16")
    return _DTYPES[precision]


class Encoder:
    """A built encoder on a device: ``encode(uint8 patches) -> float32 features``.

    Preprocessing (on the device): ``x = (resize(p) / 255 - mean) / std`` with ``p`` the uint8
    RGB patch, resized to ``spec.input_size`` with antialiasing when needed. A resize output
    pixel is a weighted sum of input pixels with weights summing to one, so it commutes with the
    per-channel affine normalisation: normalising after the resize gives the same result on
    fewer pixels. The forward pass runs
    under autocast in ``dtype`` (fp32 unless the config or, on CUDA, the encoder asks).
    """

    def __init__(
        self,
        spec: EncoderSpec,
        model: nn.Module,
        *,
        device: torch.device,
        dtype: torch.dtype,
        weights_identity: str,
    ) -> None:
        self.spec = spec
        self.model = model.eval().to(device)
        self.device = device
        self.dtype = dtype
        self.weights_identity = weights_identity
        mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std)  # (p / 255 - mean) / std  ==  p * scale - shift
        self._shift = mean / std
        self._checked = False

    @property
    def precision(self) -> str:
        return {v: k for k, v in _DTYPES.items()}[self.dtype]

    def preprocess(self, patches: np.ndarray) -> torch.Tensor:
        """``[B, H, W, 3]`` uint8 -> normalised ``[B, 3, S, S]`` float32 on the device.

        On CPU the resize runs on uint8 (PyTorch's vectorised antialiased path, ~10x faster
        than float; rounding error <= 0.5/255); on a GPU it runs in float on the device.
        """
        if patches.dtype != np.uint8 or patches.ndim != 4 or patches.shape[-1] != 3:
            raise ValueError(f"expected [B, H, W, 3] uint8 patches, got {patches.dtype} {patches.shape}")
        x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2)  # channels-last view
        on_cpu = self.device.type == "cpu"
        if on_cpu:
            x = self._fit(x)
        x = x.to(self.device, non_blocking=True).to(torch.float32, copy=True)
        if not on_cpu:
            x = self._fit(x)
        return x.mul_(self._scale).sub_(self._shift)

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        """Resize (and centre-crop when ``crop_pct < 1``) ``[B, 3, H, W]`` to the input size."""
        size = self.spec.input_size
        if size is None:
            return x
        scaled = math.floor(size / self.spec.crop_pct + 1e-6)  # timm's convention
        if x.shape[-2] != scaled or x.shape[-1] != scaled:
            x = nn.functional.interpolate(
                x, size=(scaled, scaled), mode=self.spec.interpolation, antialias=True, align_corners=False
            )
        if scaled != size:
            top = (scaled - size) // 2
            x = x[:, :, top : top + size, top : top + size]
        return x

    @torch.inference_mode()
    def encode(self, patches: np.ndarray) -> np.ndarray:
        """Features ``[B, embed_dim]`` float32 (CPU numpy) of ``[B, H, W, 3]`` uint8 RGB patches."""
        x = self.preprocess(patches)
        autocast = self.dtype != torch.float32
        with torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=autocast):
            out = self.model(x)
        feats: np.ndarray = out.float().cpu().numpy()
        if not self._checked:
            if feats.ndim != 2 or feats.shape[1] != self.spec.embed_dim:
                raise ConsistencyError(
                    f"encoder {self.spec.name!r} returned features of shape {tuple(feats.shape)}, "
                    f"but declares embed_dim {self.spec.embed_dim}",
                    hint="the encoder's build() must return [B, embed_dim]; fix its declaration",
                )
            self._checked = True
        return feats
