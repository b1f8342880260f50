"""Bundles: trained models and source task vectors as single verified safetensors files.

- :mod:`~steph.bundles.container`: the file format (tensor parts + JSON card, verified on load);
- :mod:`~steph.bundles.card`: what a model card says, gathered from a project;
- :mod:`~steph.bundles.export`: ``stephctl export`` (one fold, or every fold as an ensemble);
- :mod:`~steph.bundles.model`: a bundle back into a predictor (``stephctl predict --model``);
- :mod:`~steph.bundles.sources`: ``stephctl export-sources`` / ``import-sources``;
- :mod:`~steph.bundles.signing`: ``<bundle>.sig`` (ssh-keygen) and the trust list.

See docs/sharing.md for the two-lab workflow.
"""

from __future__ import annotations

from .container import FORMAT, FORMAT_VERSION, Bundle, read_bundle

__all__ = ["FORMAT", "FORMAT_VERSION", "Bundle", "read_bundle"]
