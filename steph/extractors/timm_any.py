"""``timm:<model>``: any timm image model as a patch encoder (pooled features, no classifier).

The model name may carry a pretrained tag (``timm:resnet50.a1_in1k``). Normalisation, input
size, interpolation and crop come from timm's pretrained configuration of that name; the
output dimension is read from the architecture built on the ``meta`` device (no memory, no
weights). Weights: a local file (loaded strictly), else timm's own download when the hub is
reachable.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from ..errors import UnknownNameError
from .base import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec
from .weights import build_from_file_or_hub

PREFIX = "timm:"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_timm_name(name: str) -> bool:
    return name.startswith(PREFIX)


def timm_spec(name: str) -> EncoderSpec:
    """The :class:`EncoderSpec` of ``timm:<model>``.

    Raises:
        UnknownNameError: timm has no such model.
    """
    import timm

    model_name = name[len(PREFIX) :]
    arch = model_name.split(".", 1)[0]
    if not _MODEL_NAME.fullmatch(model_name) or not timm.is_model(arch):
        close = timm.list_models(f"*{arch[:12]}*")[:8] if _MODEL_NAME.fullmatch(model_name) else []
        raise UnknownNameError(
            f"unknown timm model {model_name!r} (encoder {name!r})",
            hint=("similar timm models: " + ", ".join(close))
            if close
            else "see `timm.list_models()` for names",
        )
    cfg = _pretrained_cfg(model_name)
    input_size = int(cfg.get("input_size", (3, 224, 224))[-1])
    with torch.device("meta"):
        probe = timm.create_model(arch, pretrained=False, num_classes=0)
    # timm's models set num_features, an int; create_model is typed as a plain nn.Module
    embed_dim = int(cast("int", probe.num_features))

    def architecture() -> nn.Module:
        return timm.create_model(arch, pretrained=False, num_classes=0)

    def build(weights: Path | None, device: torch.device) -> nn.Module:
        model = build_from_file_or_hub(
            name,
            weights,
            architecture=architecture,
            hub_id=model_name,
            hub_kwargs={"num_classes": 0},
            hint=f"download the weights of {model_name} (see its timm / Hugging Face model card)",
        )
        return model.to(device).eval()

    interpolation = cfg.get("interpolation", "bilinear")
    return EncoderSpec(
        name=name,
        embed_dim=embed_dim,
        build=build,
        input_size=input_size,
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
        interpolation=interpolation if interpolation in ("bilinear", "bicubic") else "bilinear",
        crop_pct=float(cfg.get("crop_pct", 1.0) or 1.0),
        precision="fp16",
        default_weights=f"timm:{model_name} pretrained",
        weights_hint=f"timm weights of {model_name}",
        license=str(cfg.get("license", "") or "see the timm model card"),
        description=f"timm model {model_name}",
        architecture=architecture,
    )


def _pretrained_cfg(model_name: str) -> dict[str, Any]:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None:
        return {}
    to_dict: Callable[[], dict[str, Any]] = cfg.to_dict  # timm leaves PretrainedCfg.to_dict unannotated
    return to_dict()


FAMILY_ROW: dict[str, object] = {
    "name": "timm:<model>",
    "embed_dim": "model's",
    "input_size": "model's",
    "precision": "fp16",
    "weights": "timm pretrained",
    "license": "per model",
    "gated": False,
    "description": "any timm image model, e.g. timm:resnet50.a1_in1k (pooled features)",
}
