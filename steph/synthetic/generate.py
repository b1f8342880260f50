"""``generate_cohort``: a synthetic multi-cancer cohort written into a stephctl project."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

from ..config import DEFAULT_ENCODER, load_config
from ..errors import ConfigError, DataError
from ..fileio import read_csv, write_csv
from ..layout import ProjectLayout
from ..progress import NULL_PROGRESS, Progress
from ..project import MANIFEST_COLUMNS, init_project
from ..records import CohortRecord
from ..report import StageReport, Status
from .cohort import CohortSpec, draw_cohort
from .features import feature_slides
from .slides import slide_files
from .tables import GENERATOR_VERSION, describe, plain_spec, write_labels, write_splits, write_truth

log = logging.getLogger(__name__)

Level = Literal["features", "slides"]
FEATURE_ENCODER = "synthetic"
"""Encoder name of feature-level cohorts in a new project (features/synthetic/)."""


def generate_cohort(
    root: Path | str,
    spec: CohortSpec,
    *,
    level: Level = "features",
    encoder: str | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Write the cohort ``spec`` into the project at ``root`` (initialised first if needed).

    Writes ``labels/<CANCER>.csv``, ``splits/<CANCER>/splits_<k>.csv``, ``synthetic/truth.csv``
    and ``synthetic/cohort.json``, plus either one feature file per slide under
    ``features/<encoder>/`` (``level="features"``) or one pyramidal TIFF per slide under
    ``slides/<CANCER>/`` listed in ``slides/manifest.csv`` (``level="slides"``). Generation is
    deterministic in ``spec``; a rerun reuses the slide files already written.

    Args:
        encoder: the encoder of a new project (default ``synthetic`` for features, ``tiny-cnn``
            for slides); feature-level files go to ``features/<encoder>/`` (default: the
            project's encoder).
        overwrite: rewrite every file, and replace a different cohort already in the project.
        workers: threads that render and compress slides at the slide level (default: the
            usable CPU cores, at most 4); the files do not depend on it.

    Raises:
        ConfigError: the project already holds a different generated cohort, or labels that the
            generator did not write, and not ``overwrite``.
    """
    layout = ProjectLayout(Path(root))
    if level not in ("features", "slides"):
        raise ConfigError(f"unknown cohort level {level!r}", hint="use 'features' or 'slides'")
    if not layout.config_file.is_file():
        default = FEATURE_ENCODER if level == "features" else DEFAULT_ENCODER
        init_project(layout.root, encoder=encoder or default, cancers=spec.names)
    encoder = encoder or load_config(layout.root).encoder
    _check_previous(layout, spec, level, overwrite)
    cohorts = draw_cohort(spec)
    extra = {"encoder": encoder if level == "features" else None}
    # cohort.json first (marked incomplete): it identifies the folder as generated, so an
    # interrupted run resumes instead of being taken for someone's real data
    describe(spec, cohorts, level=level, extra={**extra, "complete": False}).write(layout.synthetic_spec)
    report = StageReport("generate")
    threads = workers if workers is not None else min(4, _usable_cores())
    total = sum(len(s) for c in cohorts.values() for s in c.slide_ids)
    progress.start("generate", total, unit="slides")
    manifest: list[dict[str, object]] = []
    for name, cohort in cohorts.items():
        write_labels(layout, cohort)
        write_splits(layout, cohort, spec)
        written = reused = 0
        if level == "features":
            for slide_id, new in feature_slides(layout, spec, cohort, encoder=encoder, overwrite=overwrite):
                written, reused = written + new, reused + (not new)
                progress.advance("generate", 1, item=slide_id)
        else:
            for row, new in slide_files(layout, spec, cohort, overwrite=overwrite, workers=threads):
                manifest.append(row)
                written, reused = written + new, reused + (not new)
                progress.advance("generate", 1, item=row["slide_id"])
        status = Status.DONE if written else Status.SKIPPED
        report.add(
            name,
            status,
            f"{len(cohort.patient_ids)} patients, {written} slides written, {reused} reused; "
            f"censoring {cohort.censoring_rate:.0%}, oracle C {cohort.oracle_c_index:.3f}",
            patients=len(cohort.patient_ids),
            events=int(cohort.event.sum()),
            written=written,
            reused=reused,
            oracle_c_index=cohort.oracle_c_index,
        )
    progress.finish("generate")
    if level == "slides":
        _write_manifest(layout, manifest)
    write_truth(
        layout, spec, cohorts, level=level, extra={"encoder": encoder if level == "features" else None}
    )
    report.outputs.update(
        project=str(layout.root),
        level=level,
        truth=str(layout.synthetic_truth),
        spec=str(layout.synthetic_spec),
    )
    log.info("generated a %s-level cohort of %d cancers in %s", level, len(cohorts), layout.root)
    return report


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check_previous(layout: ProjectLayout, spec: CohortSpec, level: str, overwrite: bool) -> None:
    """Refuse to mix two different cohorts in one project, or to overwrite real labels."""
    if overwrite:
        return
    if not layout.synthetic_spec.is_file():
        existing = [layout.labels(name) for name in spec.names if layout.labels(name).is_file()]
        if existing:
            raise ConfigError(
                f"{existing[0]} exists and was not written by the cohort generator",
                hint="generate the synthetic cohort into a new directory (e.g. `stephctl demo NEW_DIR`)",
            )
        return
    try:
        stored = CohortRecord.read(layout.synthetic_spec)
    except DataError as exc:
        raise DataError(exc.message, hint="delete it and generate again") from exc
    same = (
        stored.spec == plain_spec(spec)
        and stored.level == level
        and stored.generator_version == GENERATOR_VERSION
    )
    if not same:
        raise ConfigError(
            f"{layout.root} already holds a different generated cohort ({layout.synthetic_spec})",
            hint="generate into a new directory, or overwrite to replace it",
        )


def _write_manifest(layout: ProjectLayout, rows: list[dict[str, object]]) -> None:
    """Write the generated slides into slides/manifest.csv, keeping rows of other slides."""
    ours = {str(r["slide_id"]) for r in rows}
    kept = (
        [r for r in read_csv(layout.manifest) if r.get("slide_id") not in ours]
        if layout.manifest.is_file()
        else []
    )
    write_csv(layout.manifest, MANIFEST_COLUMNS, [*kept, *rows])
