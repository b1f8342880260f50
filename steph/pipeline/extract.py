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
from ..locks import clear_stale_locks as clear_locks
from ..logs import run_log
from ..progress import NULL_PROGRESS, Progress
from ..report import StageReport, Status
from ..runtime import resolve_device
from ..slides.manifest import SlideEntry, read_manifest, read_selection, resolve_shard, select, shard

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


def extract_features(
    layout: ProjectLayout,
    config: ProjectConfig,
    *,
    cancers: list[str] | None = None,
    slides_file: Path | None = None,
    num_shards: int | None = None,
    shard_index: int | None = None,
    overwrite: bool = False,
    clear_stale_locks: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Extract patch features of the selected slides with ``config.encoder``.

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
    if clear_stale_locks:
        for info in clear_locks(out_dir):
            log.warning("removed stale lock %s (%s)", info.path, info.describe())
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
        runner = _Runner(layout, config, device=device, overwrite=overwrite, progress=progress)
        progress.start("slides", len(selection.entries), unit="slides")
        try:
            with SlidesAhead(config.extract) as ahead:
                entries = selection.entries
                for i, entry in enumerate(entries):
                    runner.run(entry, report, ahead=ahead, upcoming=entries[i + 1 :])
                    progress.advance("slides", 1, slide=entry.slide_id)
        finally:
            progress.finish("slides")
            _update_failures(layout.extract_failures(spec.name), report, selection.entries)
    total = sum(int(item.details.get("n_patches", 0)) for item in report.items if item.status is Status.DONE)
    report.outputs.update(
        {
            "features_dir": str(out_dir),
            "encoder": spec.name,
            "encoder_weights": runner.encoder.weights_identity if runner.encoder else spec.default_weights,
            "shard": f"{selection.shard_index}/{selection.num_shards}",
            "patches": total,
            "patches_per_s": round(total / max(runner.busy_s, 1e-9), 1) if total else 0.0,
            "failures_csv": str(layout.extract_failures(spec.name)),
            "log": str(log_path),
        }
    )
    return report


class _Runner:
    """Processes slides one by one; builds the encoder on the first slide that needs it.

    While a slide encodes, the next slide that will be processed (no manifest problem, output
    not complete, no lock of another task) is prepared in the background (:class:`SlidesAhead`);
    its lock is still taken, and its completeness checked again, when its turn comes.
    """

    def __init__(
        self,
        layout: ProjectLayout,
        config: ProjectConfig,
        *,
        device: torch.device,
        overwrite: bool,
        progress: Progress,
    ) -> None:
        self.layout = layout
        self.device = device
        self.config = config
        self.overwrite = overwrite
        self.progress = progress
        self.encoder: Encoder | None = None
        self.busy_s = 0.0

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

    def run(
        self,
        entry: SlideEntry,
        report: StageReport,
        *,
        ahead: SlidesAhead,
        upcoming: Sequence[SlideEntry] = (),
    ) -> None:
        if entry.problem is not None:
            report.add(
                entry.slide_id or f"row {entry.row}",
                Status.FAILED,
                entry.problem.message,
                hint=entry.problem.hint,
            )
            return
        encoder_name = self.config.encoder
        output = self.layout.own_features(encoder_name, entry.slide_id)
        if not self._needs_work(entry):
            ahead.discard(entry.slide_id)
            report.add(entry.slide_id, Status.SKIPPED, "complete output exists (use --overwrite to redo)")
            return
        _clear_dead_local_lock(output)
        try:
            with hold(output, what=f"slide {entry.slide_id}"):
                if not self.overwrite and is_complete(output):  # finished by another task meanwhile
                    ahead.discard(entry.slide_id)
                    report.add(entry.slide_id, Status.SKIPPED, "completed by another task")
                    return
                remove_stale_temps(output)
                encoder = self._encoder()
                start = time.perf_counter()
                thumbnail = self.layout.thumbnail(encoder_name, entry.slide_id)
                try:
                    prepared = ahead.take(entry, thumbnail)
                finally:
                    self._prepare_next(ahead, upcoming)  # a failed slide still lets the next one start
                outcome = encode_slide(
                    prepared,
                    encoder=encoder,
                    config=self.config.extract,
                    output=output,
                    progress=self.progress,
                    start=start,
                )
        except LockedError as exc:
            ahead.discard(entry.slide_id)
            report.add(entry.slide_id, Status.LOCKED, exc.message, hint=exc.hint)
            return
        except (EncoderUnavailableError, ConsistencyError, ConfigError):
            raise  # run-level: every slide would fail the same way
        except StephError as exc:
            log.warning("slide %s failed: %s", entry.slide_id, exc)
            report.add(entry.slide_id, Status.FAILED, exc.message, hint=exc.hint)
            return
        except Exception as exc:  # one odd slide must not end a 10,000-slide run; logged in full
            log.exception("slide %s: unexpected error", entry.slide_id)
            report.add(
                entry.slide_id,
                Status.FAILED,
                f"unexpected {type(exc).__name__}: {exc}",
                hint="see the run log; please report it",
            )
            return
        self.busy_s += outcome.seconds
        log.info("slide %s: %s", entry.slide_id, outcome.describe())
        report.add(
            entry.slide_id,
            Status.DONE,
            outcome.describe(),
            n_patches=outcome.n_patches,
            slide_mpp=outcome.mpp.mpp,
            mpp_source=outcome.mpp.source,
            seconds=round(outcome.seconds, 3),
            output=str(output),
        )

    def _needs_work(self, entry: SlideEntry) -> bool:
        """Whether ``entry`` will be extracted when its turn comes (as far as can be told now)."""
        output = self.layout.own_features(self.config.encoder, entry.slide_id)
        return self.overwrite or not is_complete(output)

    def _prepare_next(self, ahead: SlidesAhead, upcoming: Sequence[SlideEntry]) -> None:
        """Start preparing the first of ``upcoming`` that will be processed: no manifest
        problem, output not complete (or ``overwrite``), no lock held by a live task. Slides
        before it are skipped or reported in their turn; nothing is prepared when none qualifies."""
        for entry in upcoming:
            if entry.problem is not None or not self._needs_work(entry):
                continue
            output = self.layout.own_features(self.config.encoder, entry.slide_id)
            info = read_lock(lock_path_for(output))
            if info is not None and not _dead_local(info):
                continue  # another task's slide: reported locked in its turn
            if ahead.pending != entry.slide_id:
                ahead.start(entry, self.layout.thumbnail(self.config.encoder, entry.slide_id))
            return


def _dead_local(info: LockInfo) -> bool:
    return info.host == socket.gethostname() and info.is_stale(max_age_hours=math.inf)


def _clear_dead_local_lock(output: Path) -> None:
    """Remove ``output``'s lock when its owner was a process of this host that no longer runs
    (a killed run being resumed). Locks of other hosts are stale only by age or on request."""
    info = read_lock(lock_path_for(output))
    if info is not None and _dead_local(info):
        log.warning("removing the lock of dead process %d on this host: %s", info.pid, info.path)
        info.path.unlink(missing_ok=True)


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
