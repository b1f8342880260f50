"""Pathology foundation models as timm architectures with their published arguments.

Each encoder is built with ``pretrained=False`` from the arguments below and then loads a
local weights file strictly, or, when no file is given and the hub is reachable, is
downloaded by timm from its ``hf-hub:`` id (gated models need an access request and a
Hugging Face token). The arguments are those of the models' own hub configurations.

| name          | timm architecture               | dim  | normalisation | precision |
|---------------|---------------------------------|------|---------------|-----------|
| uni2-h        | vit_giant_patch14_224 (SwiGLU)  | 1536 | ImageNet      | bf16      |
| uni           | vit_large_patch16_224           | 1024 | ImageNet      | fp16      |
| h-optimus-0   | vit_giant_patch14_reg4_dinov2   | 1536 | H-optimus     | fp16      |
| virchow2      | vit_huge_patch14_224 (SwiGLU)   | 2560 | ImageNet      | fp16      |
| prov-gigapath | vit_giant_patch14_dinov2        | 1536 | ImageNet      | fp16      |

Virchow2's embedding is the class token concatenated with the mean of the patch tokens
(its four register tokens excluded), as its model card prescribes. Prov-GigaPath's own
transform resizes to 256 and centre-crops 224 (``crop_pct = 224/256``); the others resize to
224.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import EncoderSpec
from .weights import build_from_file_or_hub

HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)


def _swiglu() -> dict[str, Any]:
    from timm.layers.mlp import SwiGLUPacked

    return {"mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU}


def _uni2h_kwargs() -> dict[str, Any]:
    return {
        "img_size": 224,
        "patch_size": 14,
        "depth": 24,
        "num_heads": 24,
        "init_values": 1e-5,
        "embed_dim": 1536,
        "mlp_ratio": 2.66667 * 2,
        "num_classes": 0,
        "no_embed_class": True,
        "reg_tokens": 8,
        "dynamic_img_size": True,
        **_swiglu(),
    }


def _uni_kwargs() -> dict[str, Any]:
    return {
        "img_size": 224,
        "patch_size": 16,
        "init_values": 1e-5,
        "num_classes": 0,
        "dynamic_img_size": True,
    }


def _hoptimus0_kwargs() -> dict[str, Any]:
    return {
        "img_size": 224,
        "init_values": 1e-5,
        "num_classes": 0,
        "global_pool": "token",
        "dynamic_img_size": False,
    }


def _virchow2_kwargs() -> dict[str, Any]:
    return {
        "img_size": 224,
        "init_values": 1e-5,
        "num_classes": 0,
        "reg_tokens": 4,
        "mlp_ratio": 5.3375,
        "global_pool": "",
        "dynamic_img_size": True,
        **_swiglu(),
    }


def _gigapath_kwargs() -> dict[str, Any]:
    return {
        "img_size": 224,
        "in_chans": 3,
        "patch_size": 16,
        "embed_dim": 1536,
        "depth": 40,
        "num_heads": 24,
        "init_values": 1e-5,
        "mlp_ratio": 5.33334,
        "num_classes": 0,
        "global_pool": "token",
    }


class ClsPatchMean(nn.Module):
    """``concat(token[:, 0], mean(token[:, prefix:]))`` over a ViT's unpooled token output."""

    def __init__(self, backbone: nn.Module, prefix_tokens: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.prefix_tokens = prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone(x)  # [B, prefix + patches, C]
        return torch.cat([tokens[:, 0], tokens[:, self.prefix_tokens :].mean(dim=1)], dim=-1)


def _timm_arch(arch: str, kwargs: Callable[[], dict[str, Any]]) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import timm

        return timm.create_model(arch, pretrained=False, **kwargs())

    return make


def _spec(
    name: str,
    *,
    arch: str,
    kwargs: Callable[[], dict[str, Any]],
    hub_id: str,
    hub_kwargs: Callable[[], dict[str, Any]],
    embed_dim: int,
    hint: str,
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
    **fields: Any,
) -> EncoderSpec:
    architecture = _timm_arch(arch, kwargs)

    def build(weights: Path | None, device: torch.device) -> nn.Module:
        model = build_from_file_or_hub(
            name, weights, architecture=architecture, hub_id=hub_id, hub_kwargs=hub_kwargs(), hint=hint
        )
        return wrap(model).to(device).eval()

    return EncoderSpec(
        name=name,
        embed_dim=embed_dim,
        build=build,
        default_weights=hub_id,
        weights_hint=hint,
        architecture=lambda: wrap(architecture()),
        **fields,
    )


def _virchow_wrap(model: nn.Module) -> nn.Module:
    return ClsPatchMean(model, prefix_tokens=getattr(model, "num_prefix_tokens", 5))


SPECS = (
    _spec(
        "uni2-h",
        arch="vit_giant_patch14_224",
        kwargs=_uni2h_kwargs,
        hub_id="hf-hub:MahmoodLab/UNI2-h",
        hub_kwargs=_uni2h_kwargs,
        embed_dim=1536,
        precision="bf16",
        license="CC-BY-NC-ND 4.0 (gated)",
        gated=True,
        description="UNI2-h, ViT-giant/14 (MahmoodLab); the encoder of the STEPH paper",
        hint="request access at https://huggingface.co/MahmoodLab/UNI2-h and download pytorch_model.bin",
    ),
    _spec(
        "uni",
        arch="vit_large_patch16_224",
        kwargs=_uni_kwargs,
        hub_id="hf-hub:MahmoodLab/UNI",
        hub_kwargs=_uni_kwargs,
        embed_dim=1024,
        precision="fp16",
        license="CC-BY-NC-ND 4.0 (gated)",
        gated=True,
        description="UNI, ViT-large/16 (MahmoodLab)",
        hint="request access at https://huggingface.co/MahmoodLab/UNI and download pytorch_model.bin",
    ),
    _spec(
        "h-optimus-0",
        arch="vit_giant_patch14_reg4_dinov2",
        kwargs=_hoptimus0_kwargs,
        hub_id="hf-hub:bioptimus/H-optimus-0",
        hub_kwargs=lambda: {"init_values": 1e-5, "dynamic_img_size": False},
        embed_dim=1536,
        mean=HOPTIMUS_MEAN,
        std=HOPTIMUS_STD,
        interpolation="bicubic",
        precision="fp16",
        license="Apache-2.0",
        gated=False,
        description="H-optimus-0, ViT-giant/14 with 4 registers (Bioptimus)",
        hint="download pytorch_model.bin from https://huggingface.co/bioptimus/H-optimus-0",
    ),
    _spec(
        "virchow2",
        arch="vit_huge_patch14_224",
        kwargs=_virchow2_kwargs,
        hub_id="hf-hub:paige-ai/Virchow2",
        hub_kwargs=_swiglu,
        embed_dim=2560,
        wrap=_virchow_wrap,
        interpolation="bicubic",
        precision="fp16",
        license="CC-BY-NC-ND 4.0 (gated)",
        gated=True,
        description="Virchow2, ViT-huge/14 (Paige); class token + mean patch token",
        hint="request access at https://huggingface.co/paige-ai/Virchow2 and download pytorch_model.bin",
    ),
    _spec(
        "prov-gigapath",
        arch="vit_giant_patch14_dinov2",
        kwargs=_gigapath_kwargs,
        hub_id="hf-hub:prov-gigapath/prov-gigapath",
        hub_kwargs=dict,
        embed_dim=1536,
        interpolation="bicubic",
        crop_pct=224 / 256,
        precision="fp16",
        license="Apache-2.0 (gated)",
        gated=True,
        description="Prov-GigaPath tile encoder, ViT-giant (Providence / Microsoft)",
        hint="request access at https://huggingface.co/prov-gigapath/prov-gigapath and download pytorch_model.bin",
    ),
)
