"""Registration of the built-in encoders (entry point ``stephctl.encoders: builtin``)."""

from __future__ import annotations

from ..registry import Registry
from .base import EncoderSpec
from .foundation import SPECS
from .tiny_cnn import SPEC as TINY_CNN


def register(registry: Registry[EncoderSpec]) -> None:
    """Add tiny-cnn and the foundation models to ``registry``."""
    for spec in (TINY_CNN, *SPECS):
        registry.add(spec.name, spec)
