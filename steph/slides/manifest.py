"""The slide manifest (``slides/manifest.csv``), slide selections and deterministic shards.

Manifest columns: ``slide_id, patient_id, cancer, path`` and optionally ``mpp`` (``path``
relative to the project root, or absolute). Problems with the whole file (missing columns,
duplicate slide ids) are errors before any work; problems with one row (an unsafe slide id,
an unreadable ``mpp``, a bad cancer name) fail that slide only.

Sharding: the selected slides are sorted by ``slide_id`` and shard ``i`` of ``N`` takes every
slide whose position ``p`` satisfies ``p mod N == i``. The shards are disjoint, cover every
slide exactly once, do not depend on the manifest's row order, and mix cancers evenly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError, StephError
from ..fileio import read_csv
from ..layout import ProjectLayout, check_safe_id, normalize_cancer

REQUIRED = ("slide_id", "patient_id", "cancer", "path")


@dataclass(frozen=True)
class SlideEntry:
    """One manifest row. ``problem`` is set when the row cannot be processed (reported per slide)."""

    slide_id: str
    patient_id: str
    cancer: str
    path: Path
    mpp: float | None
    row: int
    problem: StephError | None = None


def read_manifest(layout: ProjectLayout, path: Path | None = None) -> list[SlideEntry]:
    """Rows of the manifest at ``path`` (default ``slides/manifest.csv``), in file order.

    Raises:
        MissingArtifactError: the file does not exist.
        DataError: missing columns or duplicate slide ids (listed with their rows).
    """
    from ..errors import MissingArtifactError

    path = path or layout.manifest
    if not path.is_file():
        raise MissingArtifactError(
            f"slide manifest not found: {path}",
            hint="create it with columns slide_id,patient_id,cancer,path[,mpp] (stephctl init writes an empty one)",
        )
    rows = read_csv(path)
    header = list(rows[0]) if rows else _header(path)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'}",
            hint="the manifest needs slide_id,patient_id,cancer,path and optionally mpp",
        )
    rows = [{k: v or "" for k, v in row.items()} for row in rows]  # a short row's missing cells are None
    counts = Counter(row["slide_id"] for row in rows if row["slide_id"])  # an empty id fails its row alone
    duplicates = sorted(s for s, n in counts.items() if n > 1)
    if duplicates:
        where = [
            f"{s} (rows {', '.join(str(i + 2) for i, r in enumerate(rows) if r['slide_id'] == s)})"
            for s in duplicates
        ]
        raise DataError(
            f"{path}: duplicate slide_id: {'; '.join(where[:10])}" + (" ..." if len(where) > 10 else ""),
            hint="every slide needs a unique slide_id (it names the feature file)",
        )
    return [_entry(layout, path, row, number + 2) for number, row in enumerate(rows)]


def _header(path: Path) -> list[str]:
    first = path.read_text(encoding="utf-8-sig").splitlines()[:1]
    return [c.strip() for c in first[0].split(",")] if first else []


def _entry(layout: ProjectLayout, path: Path, row: Mapping[str, str], number: int) -> SlideEntry:
    slide_id = row.get("slide_id") or ""
    problem: StephError | None = None
    mpp: float | None = None
    cancer = row.get("cancer") or ""
    try:
        check_safe_id(slide_id)
        cancer = normalize_cancer(cancer)
        text = (row.get("mpp") or "").strip()
        if text:
            try:
                mpp = float(text)
            except ValueError:
                raise DataError(
                    f"{path} row {number}: mpp {text!r} is not a number",
                    hint="leave it empty or give microns per pixel",
                ) from None
        if not (row.get("path") or "").strip():
            raise DataError(f"{path} row {number}: empty path", hint="give the slide file's path")
    except StephError as exc:
        exc.message = exc.message if str(path) in exc.message else f"{path} row {number}: {exc.message}"
        problem = exc
    return SlideEntry(
        slide_id=slide_id,
        patient_id=row.get("patient_id") or "",
        cancer=cancer,
        path=layout.slide_path(row.get("path") or ""),
        mpp=mpp,
        row=number,
        problem=problem,
    )


def read_selection(path: Path) -> list[str] | None:
    """Slide ids listed in ``path``: a CSV with a ``slide_id`` column, or one id per line.

    Returns None when the file is itself a manifest (has ``slide_id`` and ``path`` columns).

    Raises:
        MissingArtifactError: the file does not exist.
    """
    from ..errors import MissingArtifactError

    if not path.is_file():
        raise MissingArtifactError(
            f"slide list not found: {path}", hint="--slides takes a manifest CSV or a list of slide ids"
        )
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    header = [c.strip() for c in lines[0].split(",")] if lines else []
    if "slide_id" in header:
        if "path" in header:
            return None
        return [row["slide_id"] for row in read_csv(path) if row.get("slide_id")]
    return [line.split(",")[0].strip() for line in lines if not line.startswith("#")]


def select(
    entries: Sequence[SlideEntry],
    *,
    cancers: Iterable[str] | None = None,
    slide_ids: Sequence[str] | None = None,
    source: str = "",
) -> list[SlideEntry]:
    """Entries of the given cancers and slide ids (None = all), sorted by slide id.

    Raises:
        DataError: a requested slide id is not in the manifest.
    """
    chosen = list(entries)
    if slide_ids is not None:
        known = {e.slide_id for e in entries}
        unknown = [s for s in slide_ids if s not in known]
        if unknown:
            raise DataError(
                f"{source or '--slides'}: {len(unknown)} slide id(s) not in the manifest: {', '.join(unknown[:10])}"
                + (" ..." if len(unknown) > 10 else ""),
                hint="list slide ids of slides/manifest.csv, or pass a full manifest CSV (with a path column)",
            )
        wanted = set(slide_ids)
        chosen = [e for e in chosen if e.slide_id in wanted]
    if cancers:
        names = {normalize_cancer(c) for c in cancers}
        chosen = [e for e in chosen if e.cancer in names]
    return sorted(chosen, key=lambda e: e.slide_id)


def resolve_shard(num_shards: int | None, shard_index: int | None) -> tuple[int, int]:
    """``(N, i)`` from the flags, else ``(1, 0)`` (every slide). In a Slurm array the task id
    chooses the shard through the stage's task list (``$SLURM_ARRAY_TASK_ID`` is the index of a
    unit of :func:`steph.stages.extract.plan`, as for every stage).

    Raises:
        ConfigError: only one flag given, or the index is outside ``[0, N)``.
    """
    if num_shards is None and shard_index is None:
        return 1, 0
    if num_shards is None or shard_index is None:
        raise ConfigError("--num-shards and --shard-index go together", hint="pass both, or neither")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ConfigError(
            f"shard index {shard_index} is outside [0, {num_shards}) (num shards {num_shards})",
            hint="--shard-index counts from 0; in a Slurm array use --array=0-(N-1) with --num-shards N",
        )
    return num_shards, shard_index


def shard(entries: Sequence[SlideEntry], num_shards: int, shard_index: int) -> list[SlideEntry]:
    """Shard ``shard_index`` of ``num_shards`` of slide-id-sorted ``entries`` (position mod N)."""
    ordered = sorted(entries, key=lambda e: e.slide_id)
    return [e for position, e in enumerate(ordered) if position % num_shards == shard_index]
