"""Seeing what a model sees: attention heatmaps, top patches, STEPH transfer, QuPath GeoJSON.

:func:`render_patient` (project-independent: arrays and slide paths in, files out) draws one
patient; :func:`steph.explain.stage.explain_patients` is the project stage behind
``stephctl explain``.
"""

from __future__ import annotations

from .render import PatientPage, SlideInput, render_patient
from .transfer import Transfer

__all__ = ["PatientPage", "SlideInput", "Transfer", "render_patient"]
