"""Extract on several devices of one node: one worker process per device, disjoint slides.

``stephctl extract --devices 0,1,2,3`` plans the slides the command would process (all of them,
or one shard of them), deals them round-robin to one worker per device and runs
:func:`steph.pipeline.extract.extract_features` in each worker on its own slides with
``extract.device`` set to that device. Workers are started with the ``spawn`` method (safe with
CUDA and with torch's thread pools); their log records and progress events travel back to the
parent over one queue, and their reports are merged into one. A device may be listed twice
(``cpu,cpu``: two CPU workers, each with its share of the cores).

The per-slide locks and atomic writes of extract make the workers safe even against other
processes (another node, a second array task) working on the same project.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue as queue_module
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, StephError
from ..progress import NULL_PROGRESS, Progress
from ..report import StageReport, Status

if TYPE_CHECKING:
    from ..config import ProjectConfig
    from ..layout import ProjectLayout

log = logging.getLogger(__name__)
STAGE = "extract"


def parse_devices(spec: str | Sequence[str]) -> list[str]:
    """``"0,1"`` -> ``["cuda:0", "cuda:1"]``; ``cpu``, ``cuda`` and ``cuda:N`` are kept.

    >>> parse_devices("0, 1,cpu,cuda:3")
    ['cuda:0', 'cuda:1', 'cpu', 'cuda:3']

    Raises:
        ConfigError: an empty list or an entry that is not a device.
    """
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    devices = []
    for item in items:
        lowered = item.lower()
        if lowered.isdigit():
            devices.append(f"cuda:{int(lowered)}")
        elif lowered in ("cpu", "cuda") or (lowered.startswith("cuda:") and lowered[5:].isdigit()):
            devices.append(lowered)
        else:
            raise ConfigError(
                f"--devices: {item!r} is not a device",
                hint="give GPU numbers (0,1,2,3), cuda:N or cpu, separated by commas",
            )
    if not devices:
        raise ConfigError("--devices is empty", hint="e.g. --devices 0,1,2,3")
    return devices


def deal(items: Sequence[str], n: int) -> list[list[str]]:
    """Round-robin ``items`` into ``n`` disjoint lists (item ``i`` goes to list ``i mod n``).

    >>> deal(["a", "b", "c", "d", "e"], 2)
    [['a', 'c', 'e'], ['b', 'd']]
    """
    return [list(items[i::n]) for i in range(n)]


def extract_on_devices(
    layout: ProjectLayout,
    config: ProjectConfig,
    devices: Sequence[str],
    *,
    cancers: Sequence[str] | None = None,
    slides_file: Path | None = None,
    num_shards: int | None = None,
    shard_index: int | None = None,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> StageReport:
    """Extract the selected slides with one worker process per device.

    Args:
        layout: The project.
        config: Resolved config; ``extract.device`` is replaced per worker.
        devices: One entry per worker (see :func:`parse_devices`).
        cancers, slides_file, num_shards, shard_index, overwrite: As
            :func:`~steph.pipeline.extract.extract_features`; the selection is split across workers.
        progress: Receives each worker's events, task names suffixed with ``@<device>``.

    Returns:
        The workers' reports merged; a worker that died without reporting adds one failed item.
    """
    from .shards import selected_slides, write_share

    slides = selected_slides(
        layout,
        config,
        cancers=cancers,
        slides_file=slides_file,
        num_shards=num_shards,
        shard_index=shard_index,
    )
    shares = [
        (device, share) for device, share in zip(devices, deal(slides, len(devices)), strict=True) if share
    ]
    report = StageReport(STAGE)
    if not shares:
        return report
    threads = max(1, (os.cpu_count() or 1) // len(shares))
    readers = config.extract.workers  # unset: each process reads with its share of the CPUs
    if readers is None:
        from ..extraction.overlap import reader_threads
        from ..threads import usable_cpus

        readers = reader_threads(None, cpus=max(1, usable_cpus() // len(shares)))
    context = mp.get_context("spawn")
    events: Any = context.Queue()
    level = logging.getLogger("steph").getEffectiveLevel()
    with tempfile.TemporaryDirectory(prefix="stephctl-devices-") as tmp:
        workers = []
        for n, (device, share) in enumerate(shares):
            label = f"{device}#{n}" if devices.count(device) > 1 else device
            listing = write_share(Path(tmp) / f"worker_{n}.csv", share, slides_file)
            worker_config = replace(config, extract=replace(config.extract, device=device, workers=readers))
            args = (label, layout, worker_config, listing, overwrite, threads, level, events)
            process = context.Process(target=_worker, args=args, name=f"stephctl-extract-{label}")
            process.start()
            workers.append((label, process))
        reported = _collect(events, workers, report, progress)
    for label, process in workers:
        if label not in reported:
            report.add(
                f"worker {label}",
                Status.FAILED,
                f"worker process exited with code {process.exitcode} before reporting; rerun to resume its slides",
            )
    report.outputs["devices"] = [label for label, _ in workers]
    return report


def _collect(
    events: Any, workers: list[tuple[str, Any]], report: StageReport, progress: Progress
) -> set[str]:
    """Forward workers' events until every worker has exited; returns the labels that reported."""
    reported: set[str] = set()
    while True:
        try:
            label, kind, payload = events.get(timeout=0.2)
        except queue_module.Empty:
            if all(not p.is_alive() for _, p in workers):
                try:  # drain what was queued just before the last exit
                    label, kind, payload = events.get(timeout=0.5)
                except queue_module.Empty:
                    return reported
            else:
                continue
        if kind == "log":
            logging.getLogger(payload.name).handle(payload)
        elif kind == "progress":
            method, task, args, kwargs = payload
            getattr(progress, method)(f"{task} @{label}", *args, **kwargs)
        elif kind == "report":
            reported.add(label)
            for item in payload["items"]:
                report.add(
                    item["key"], Status(item["status"]), item["message"], device=label, **item["details"]
                )
            report.outputs.setdefault("workers", {})[label] = payload["outputs"]
        elif kind == "error":
            reported.add(label)
            report.add(f"worker {label}", Status.FAILED, payload)


class _QueueProgress:
    """Progress receiver of a worker: every event goes to the parent."""

    def __init__(self, label: str, events: Any) -> None:
        self.label, self.events = label, events

    def start(self, task: str, total: int | None = None, *, unit: str = "items") -> None:
        self.events.put((self.label, "progress", ("start", task, (total,), {"unit": unit})))

    def advance(self, task: str, n: int = 1, **info: Any) -> None:
        info = {k: v if isinstance(v, (int, float, str)) else str(v) for k, v in info.items()}
        self.events.put((self.label, "progress", ("advance", task, (n,), info)))

    def finish(self, task: str) -> None:
        self.events.put((self.label, "progress", ("finish", task, (), {})))


class _QueueLogHandler(logging.Handler):
    def __init__(self, label: str, events: Any) -> None:
        super().__init__()
        self.label, self.events = label, events

    def emit(self, record: logging.LogRecord) -> None:
        message = f"[{self.label}] {record.getMessage()}"
        if record.exc_info:  # tracebacks do not pickle: send them as text
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        record.msg, record.args, record.exc_info, record.exc_text = message, None, None, None
        self.events.put((self.label, "log", record))


def _worker(
    label: str,
    layout: ProjectLayout,
    config: ProjectConfig,
    listing: Path,
    overwrite: bool,
    threads: int,
    level: int,
    events: Any,
) -> None:
    """Body of one worker process: extract the slides in ``listing`` on ``config.extract.device``."""
    logger = logging.getLogger("steph")
    logger.handlers[:] = [_QueueLogHandler(label, events)]
    logger.setLevel(level)
    logger.propagate = False
    try:
        import torch

        if config.extract.device == "cpu":
            torch.set_num_threads(threads)
        from .extract import extract_features

        report = extract_features(
            layout, config, slides_file=listing, overwrite=overwrite, progress=_QueueProgress(label, events)
        )
        events.put((label, "report", report.to_dict()))
    except StephError as exc:
        events.put((label, "error", str(exc)))
    except Exception:
        events.put((label, "error", traceback.format_exc(limit=8)))
