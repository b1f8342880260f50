"""``stephctl extract``: whole-slide images to patch-feature HDF5 files, resumable and shardable.

Units of work are slides (key = ``slide_id``). A slide whose output is complete is skipped
unless ``overwrite``; a slide being processed is guarded by ``<output>.lock`` (a locked slide
is reported as ``locked`` and left to its owner); features go to a temporary file renamed into
place when complete. Per-slide problems are recorded (report + ``failures.csv``) and the run
goes on; run-level problems (bad manifest, unknown encoder, missing weights) raise before any
slide is touched.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ProjectConfig, dump_yaml
from ..errors import ConfigError, ConsistencyError, EncoderUnavailableError, LockedError, StephError
from ..extraction.ahead import SlidesAhead
from ..extraction.h5format import is_complete, remove_stale_temps
from ..extraction.slide_job import encode_slide
from ..extractors import Encoder, create_encoder, get_encoder_spec
from ..fileio import read_csv, write_csv, write_text
from ..layout import ProjectLayout
from ..locks import LockInfo, hold, lock_path_for, read_lock
from ..logs import run_log
from ..progress import NULL_PROGRESS, Progress
from ..report import StageReport, Status
from ..runtime import resolve_device
from ..slides.manifest import SlideEntry, read_manifest, read_selection, resolve_shard, select, shard
from ..units import Outcome, StopRun, UnitLock, WorkUnit, run_units

log = logging.getLogger(__name__)

STAGE = "extract"
FAILURE_COLUMNS = ("slide_id", "cancer", "path", "error", "hint", "time", "host")


@dataclass(frozen=True)
class SlideShard:
    """The slides of this run (after filters and sharding) and how they were chosen."""

    entries: list[SlideEntry]
    num_shards: int
    shard_index: int
    manifest: Path


def select_slides(
    layout: ProjectLayout,
    *,
    cancers: list[str] | None = None,
    slides_file: Path | None = None,
    num_shards: int | None = None,
    shard_index: int | None = None,
) -> SlideShard:
    """Read the manifest, apply ``--slides``/``--cancer`` and take this run's shard.

    ``slides_file`` is a manifest-format CSV (used instead of slides/manifest.csv) or a list
    of slide ids from it (a ``slide_id`` column, or one id per line).

    Raises:
        MissingArtifactError, DataError: missing/invalid manifest, duplicate or unknown ids.
        ConfigError: invalid shard numbers.
    """
    n, i = resolve_shard(num_shards, shard_index)
    manifest = layout.manifest
    wanted: list[str] | None = None
    if slides_file is not None:
        wanted = read_selection(Path(slides_file))
        if wanted is None:
            manifest = Path(slides_file)
    entries = select(
        read_manifest(layout, manifest), cancers=cancers, slide_ids=wanted, source=str(slides_file or "")
    )
    return SlideShard(shard(entries, n, i), n, i, manifest)


@dataclass(frozen=True)
class SlideUnit(WorkUnit):
    """One slide of a shard: done when its feature file is complete
    (:func:`~steph.extraction.h5format.is_complete`); a manifest row with a problem has no
    output and fails with it."""

    entry: SlideEntry | None = None

    @property
    def done(self) -> bool:
        return bool(self.outputs) and is_complete(self.outputs[0])


def slide_units(layout: ProjectLayout, encoder: str, entries: Sequence[SlideEntry]) -> list[SlideUnit]:
    """The slides of a shard as units (key: the slide id, or ``row N`` of a bad manifest row)."""
    return [
        SlideUnit(
            STAGE,
            e.slide_id or f"row {e.row}",
            () if e.problem is not None else (layout.own_features(encoder, e.slide_id),),
            entry=e,
        )
        for e in entries
    ]


def extract_features(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: list[str] | None = None,
    slides_file: Path | None = None,
    num_shards: int | None = None,
    shard_index: int | None = None,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Extract patch features of the selected slides with ``config.encoder``: each slide of the
    shard is a unit of :func:`~steph.units.run_units` (:class:`SlideWorker`), the next one
    prepared in the background while one encodes.

    Raises:
        UnknownNameError: unknown encoder (the known ones are listed).
        EncoderUnavailableError: its weights cannot be had (only when some slide needs work).
        MissingArtifactError, DataError, ConfigError: see :func:`select_slides`.
    """
    spec = get_encoder_spec(config.encoder)
    device = resolve_device(config.extract.device)
    selection = select_slides(
        layout, cancers=cancers, slides_file=slides_file, num_shards=num_shards, shard_index=shard_index
    )
    out_dir = layout.features_dir(spec.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = StageReport(STAGE)
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-shard{selection.shard_index}of{selection.num_shards}-pid{os.getpid()}"
    log_path = layout.extract_log(spec.name, stamp)
    with run_log(log_path):
        write_text(layout.extract_config(spec.name), dump_yaml(config))
        log.info(
            "extract: %d slide(s) in shard %d/%d of %s, encoder %s",
            len(selection.entries),
            selection.shard_index,
            selection.num_shards,
            selection.manifest,
            spec.name,
        )
        units = slide_units(layout, spec.name, selection.entries)
        try:
            with SlidesAhead(config.extract) as ahead:
                worker = SlideWorker(
                    layout, config, device=device, ahead=ahead, progress=progress, overwrite=overwrite
                )
                run_units(
                    STAGE,
                    units,
                    worker,
                    overwrite=overwrite,
                    progress=progress,
                    label="slides",
                    unit_name="slides",
                    look_ahead=worker.look_ahead,
                    into=report,
                )
        finally:
            _update_failures(layout.extract_failures(spec.name), report, selection.entries)
    total = sum(int(item.details.get("n_patches", 0)) for item in report.items if item.status is Status.DONE)
    report.outputs.update(
        {
            "features_dir": str(out_dir),
            "encoder": spec.name,
            "encoder_weights": worker.encoder.weights_identity if worker.encoder else spec.default_weights,
            "shard": f"{selection.shard_index}/{selection.num_shards}",
            "patches": total,
            "patches_per_s": round(total / max(worker.busy_s, 1e-9), 1) if total else 0.0,
            "failures_csv": str(layout.extract_failures(spec.name)),
            "log": str(log_path),
        }
    )
    return report


RUN_LEVEL = (EncoderUnavailableError, ConsistencyError, ConfigError)
"""Errors that stop extraction instead of failing one slide: every slide would fail the same way."""


class SlideWorker:
    """Extracts one slide; builds the encoder on the first slide that needs it.

    While a slide encodes, the next slide that will be processed (no manifest problem, output
    not complete, no lock of another task) is prepared in the background (:class:`SlidesAhead`,
    told the slides to come by :meth:`look_ahead`); its lock is still taken, and its
    completeness checked again, when its turn comes.
    """

    def __init__(
        self,
        layout: ProjectLayout,
        config: ProjectConfig,
        *,
        device: torch.device,
        ahead: SlidesAhead,
        progress: Progress,
        overwrite: bool = False,
    ) -> None:
        self.layout = layout
        self.device = device
        self.config = config
        self.ahead = ahead
        self.progress = progress
        self.overwrite = overwrite
        self.encoder: Encoder | None = None
        self.busy_s = 0.0
        self.upcoming: Sequence[SlideUnit] = ()

    def _encoder(self) -> Encoder:
        if self.encoder is None:
            name = self.config.encoder
            weights = self.config.extract.weights.get(name)
            path = Path(weights).expanduser() if weights else None
            if path is not None and not path.is_absolute():
                path = self.layout.root / path  # relative to the project, like every stephctl.yaml path
            self.encoder = create_encoder(
                name, weights=path, device=self.device, precision=self.config.extract.precision
            )
            log.info(
                "encoder %s on %s (%s, weights %s)",
                name,
                self.device,
                self.encoder.precision,
                self.encoder.weights_identity,
            )
        return self.encoder

    def look_ahead(self, upcoming: Sequence[SlideUnit]) -> None:
        """The slides after the one about to be handled (the first that will run is prepared
        once this one's own preparation is taken)."""
        self.upcoming = upcoming

    def refuse(self, unit: SlideUnit) -> Outcome | None:
        entry = unit.entry
        if entry is not None and entry.problem is not None:
            return Outcome(Status.FAILED, entry.problem.message, {"hint": entry.problem.hint})
        return None

    def skipped(self, unit: SlideUnit, *, by_other: bool) -> Outcome:
        self.ahead.discard(unit.key)
        if by_other:
            return Outcome(Status.SKIPPED, "completed by another task")
        return Outcome(Status.SKIPPED, "complete output exists (use --overwrite to redo)")

    def lock(self, unit: SlideUnit) -> UnitLock:
        return UnitLock(unit.outputs[0], f"slide {unit.key}")

    def run(self, unit: SlideUnit) -> Outcome:
        """Extract ``unit``'s slide. A slide's own error fails it with the error's message and
        hint (an unexpected exception too: one odd slide must not end a 10,000-slide run);
        :data:`RUN_LEVEL` errors stop the run (:class:`~steph.units.StopRun`)."""
        entry, output = unit.entry, unit.outputs[0]
        assert entry is not None
        try:
            remove_stale_temps(output)
            encoder = self._encoder()
            start = time.perf_counter()
            thumbnail = self.layout.thumbnail(self.config.encoder, entry.slide_id)
            try:
                prepared = self.ahead.take(entry, thumbnail)
            finally:
                self._prepare_next()  # a failed slide still lets the next one start
            outcome = encode_slide(
                prepared,
                encoder=encoder,
                config=self.config.extract,
                output=output,
                progress=self.progress,
                start=start,
            )
        except RUN_LEVEL as exc:
            raise StopRun(exc) from exc
        except StephError as exc:
            log.warning("slide %s failed: %s", entry.slide_id, exc)
            return Outcome(Status.FAILED, exc.message, {"hint": exc.hint})
        except Exception as exc:  # one odd slide must not end a 10,000-slide run; logged in full
            log.exception("slide %s: unexpected error", entry.slide_id)
            return Outcome(
                Status.FAILED,
                f"unexpected {type(exc).__name__}: {exc}",
                {"hint": "see the run log; please report it"},
            )
        self.busy_s += outcome.seconds
        log.info("slide %s: %s", entry.slide_id, outcome.describe())
        return Outcome(
            Status.DONE,
            outcome.describe(),
            {
                "n_patches": outcome.n_patches,
                "slide_mpp": outcome.mpp.mpp,
                "mpp_source": outcome.mpp.source,
                "seconds": round(outcome.seconds, 3),
                "output": str(output),
            },
        )

    def _needs_work(self, unit: SlideUnit) -> bool:
        """Whether ``unit`` will be extracted when its turn comes (as far as can be told now)."""
        return unit.entry is not None and unit.entry.problem is None and (self.overwrite or not unit.done)

    def _prepare_next(self) -> None:
        """Start preparing the first upcoming slide that will be processed: no manifest
        problem, output not complete (or ``overwrite``), no lock held by a live task. Slides
        before it are skipped or reported in their turn; nothing is prepared when none qualifies."""
        for unit in self.upcoming:
            if not self._needs_work(unit) or unit.entry is None:
                continue
            info = read_lock(lock_path_for(unit.outputs[0]))
            if info is not None and not _dead_local(info):
                continue  # another task's slide: reported locked in its turn
            if self.ahead.pending != unit.key:
                self.ahead.start(unit.entry, self.layout.thumbnail(self.config.encoder, unit.key))
            return


def _dead_local(info: LockInfo) -> bool:
    return info.host == socket.gethostname() and info.is_stale(max_age_hours=math.inf)


def _update_failures(path: Path, report: StageReport, entries: list[SlideEntry]) -> None:
    """Merge this run's failures into ``failures.csv``: rows of slides processed now are
    replaced, rows of other slides (other shards, earlier runs) are kept."""
    processed = {
        item.key for item in report.items if item.status in (Status.DONE, Status.FAILED, Status.SKIPPED)
    }
    if not processed and not path.exists():
        return
    by_id = {e.slide_id: e for e in entries}
    for attempt in range(200):
        try:
            with hold(path, what="failures.csv"):
                rows: list[dict[str, str]] = (
                    [r for r in read_csv(path) if r.get("slide_id") not in processed]
                    if path.is_file()
                    else []
                )
                now = time.strftime("%Y-%m-%dT%H:%M:%S")
                for item in report.failed:
                    entry = by_id.get(item.key)
                    rows.append(
                        {
                            "slide_id": item.key,
                            "cancer": entry.cancer if entry else "",
                            "path": str(entry.path) if entry else "",
                            "error": item.message,
                            "hint": item.details.get("hint") or "",
                            "time": now,
                            "host": socket.gethostname(),
                        }
                    )
                if rows or path.exists():
                    ordered = sorted(rows, key=lambda r: r["slide_id"])
                    write_csv(path, FAILURE_COLUMNS, ordered)
                return
        except LockedError:
            time.sleep(0.05 * (1 + attempt % 10))
    log.error("could not update %s: locked by another task for too long", path)
