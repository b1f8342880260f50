"""The library side of ``stephctl count-patches``: patch counts per slide, read from feature files.

It follows the contract of a stephctl stage: it takes the project's layout and config, asks the
layout for every path, reads only file headers (:func:`steph.data.feature_shape`), reports
progress through a callback and returns a :class:`~steph.report.StageReport` with one item per
slide (``failed`` when the slide has no feature file, so the command exits 2).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from steph.config import ProjectConfig
from steph.data import feature_shape, load_cohort
from steph.errors import ConfigError, StephError
from steph.layout import ProjectLayout, normalize_cancer
from steph.progress import NULL_PROGRESS, Progress
from steph.report import StageReport, Status


def count_patches(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: Sequence[str] | None = None,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Count the patches of every labelled slide in the features of ``config.encoder``.

    Args:
        layout: the project layout.
        config: the project config (its ``encoder`` picks the features folder).
        cancers: cancers to count (default: the project's cancers, else every labels file).
        progress: progress receiver (one step per slide).

    Returns:
        A report with one item per slide (``details``: cancer, patient_id, patches) and
        ``outputs`` holding the totals (slides, missing, patches, min/median/max per slide).

    Raises:
        ConfigError: the project has no cancers and no labels files.
        DataError: a labels file is malformed.
    """
    names = [normalize_cancer(c) for c in cancers or config.cancers or layout.label_cancers()]
    if not names:
        raise ConfigError(
            f"no cancers to count in {layout.root}",
            hint="list them under `cancers:` in stephctl.yaml or add labels/<CANCER>.csv",
        )
    slides = [
        (cancer, patient.patient_id, slide_id)
        for cancer in names
        for patient in load_cohort(layout, config, cancer).patients.values()
        for slide_id in patient.slide_ids
    ]
    report = StageReport("count-patches")
    counts: list[int] = []
    task = f"count patches ({config.encoder})"
    progress.start(task, len(slides), unit="slides")
    for cancer, patient_id, slide_id in slides:
        path = layout.features(config.encoder, slide_id, cancer=cancer)
        where = {"cancer": cancer, "patient_id": patient_id}
        if not path.is_file():
            report.add(slide_id, Status.FAILED, f"no feature file at {path}; run `stephctl extract`", **where)
        else:
            try:
                n = feature_shape(path)[0]
            except StephError as exc:
                report.add(slide_id, Status.FAILED, exc.message, **where)
            else:
                counts.append(n)
                report.add(slide_id, Status.DONE, f"{n} patches", patches=n, **where)
        progress.advance(task, item=slide_id)
    progress.finish(task)
    report.outputs = {
        "encoder": config.encoder,
        "slides": len(slides),
        "missing": len(slides) - len(counts),
        "patches": sum(counts),
        "min": min(counts, default=0),
        "median": statistics.median(counts) if counts else 0,
        "max": max(counts, default=0),
    }
    return report
