"""Who to predict: a manifest of new patients, or slide files given one by one.

Manifest: a CSV with one row per slide and columns ``patient_id`` and ``slide_id`` (or
``pathology_id``), optionally ``path`` (the slide file, relative to the project folder or
absolute) and ``mpp`` (microns per pixel when the file does not say); other columns are
ignored, so ``slides/manifest.csv`` works as is. A row with a ``path`` is a raw slide (its
features are extracted unless already there); a row without one names features that must
already exist in the project. Slide files given one by one are one patient each, named after
the file (``TCGA-XX.svs`` -> patient and slide ``TCGA-XX``).

Problems with one row (an unsafe or empty id, a slide listed twice, an unreadable ``mpp``, a
missing file) fail that row's patient only; the others are still predicted.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, MissingArtifactError, StephError
from ..layout import ProjectLayout, check_safe_id

SLIDE_COLUMNS = ("slide_id", "pathology_id")


@dataclass(frozen=True)
class SlideInput:
    slide_id: str
    path: Path | None
    """The slide file (None: its features must already exist)."""
    mpp: float | None = None


@dataclass(frozen=True)
class PatientInput:
    patient_id: str
    slides: tuple[SlideInput, ...]


@dataclass
class PredictInputs:
    """Patients to predict, in input order, and the items refused with why and how to fix it."""

    patients: list[PatientInput] = field(default_factory=list)
    problems: dict[str, StephError] = field(default_factory=dict)
    """Patient (or row) -> the error that keeps it from being predicted."""


def read_manifest(path: Path, layout: ProjectLayout) -> PredictInputs:
    """Patients of a manifest CSV (see the module docstring).

    Raises:
        MissingArtifactError: the file does not exist.
        DataError: a required column is missing or there are no rows (the whole file is unusable).
    """
    if not path.is_file():
        raise MissingArtifactError(
            f"manifest not found: {path}", hint="a CSV with columns patient_id,slide_id[,path,mpp]"
        )
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        slide_col = next((c for c in SLIDE_COLUMNS if c in header), None)
        if "patient_id" not in header or slide_col is None:
            raise DataError(
                f"{path}: needs columns patient_id and slide_id (found: {', '.join(header) or 'none'})",
                hint="one row per slide; slides/manifest.csv has this format",
            )
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    if not rows:
        raise DataError(f"{path} has no data rows", hint="one row per slide: patient_id,slide_id[,path,mpp]")
    counts = Counter(row[slide_col] for row in rows)
    out = PredictInputs()
    slides: dict[str, list[SlideInput]] = {}
    for number, row in enumerate(rows, start=2):
        pid, sid = row["patient_id"], row[slide_col]
        key = pid or f"row {number}"
        try:
            slides.setdefault(key, []).append(_slide(path, number, row, pid, sid, slide_col, counts, layout))
        except StephError as exc:
            out.problems.setdefault(key, exc)
    for pid, items in slides.items():
        if pid not in out.problems:
            out.patients.append(PatientInput(pid, tuple(items)))
    return out


def _slide(
    path: Path,
    number: int,
    row: dict[str, str],
    pid: str,
    sid: str,
    slide_col: str,
    counts: Counter[str],
    layout: ProjectLayout,
) -> SlideInput:
    where = f"{path} row {number}"
    if not pid or not sid:
        raise DataError(f"{where}: patient_id and {slide_col} must not be empty", hint="fill both cells")
    _safe(pid, "patient_id", where)
    _safe(sid, "slide_id", where)
    if counts[sid] > 1:
        raise DataError(
            f"{where}: slide {sid} is listed {counts[sid]} times",
            hint="give every slide one row with a unique slide_id (it names the feature file)",
        )
    mpp = None
    if row.get("mpp"):
        try:
            mpp = float(row["mpp"])
        except ValueError:
            raise DataError(
                f"{where}: mpp {row['mpp']!r} is not a number",
                hint="leave it empty or give microns per pixel",
            ) from None
    slide = layout.slide_path(row["path"]) if row.get("path") else None
    if slide is not None and not slide.is_file():
        raise MissingArtifactError(
            f"{where}: slide file not found: {slide}",
            hint="fix the path (relative paths start at the project folder)",
        )
    return SlideInput(sid, slide, mpp)


def _safe(value: str, what: str, where: str) -> None:
    try:
        check_safe_id(value, what)
    except StephError as exc:
        raise DataError(f"{where}: {exc.message}", hint=exc.hint) from None


def slide_inputs(paths: Sequence[Path]) -> PredictInputs:
    """One patient per slide file, named after the file without its suffix."""
    out = PredictInputs()
    stems = Counter(Path(p).stem for p in paths)
    for raw in paths:
        path = Path(raw).expanduser().absolute()
        sid = path.stem
        try:
            _safe(sid, "slide_id", str(path))
            if stems[sid] > 1:
                raise DataError(
                    f"{path}: two slide files are named {sid}",
                    hint="rename one, or use --manifest with unique slide ids",
                )
            if not path.is_file():
                raise MissingArtifactError(f"slide file not found: {path}", hint="check the path")
        except StephError as exc:
            out.problems.setdefault(sid or str(path), exc)
            continue
        out.patients.append(PatientInput(sid, (SlideInput(sid, path),)))
    return out
