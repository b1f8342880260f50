"""Per-run log files. The library logs to the ``steph`` logger; a stage attaches a file handler
under its output folder for the duration of the run."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _FileHandler(logging.FileHandler):
    """A file handler that drops a line it cannot write (a full disk) instead of printing a
    traceback: the stage reports the same error on the item it was working on."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


@contextlib.contextmanager
def run_log(path: Path, *, level: int = logging.DEBUG) -> Iterator[Path]:
    """Mirror everything logged under ``steph`` to ``path`` (appending) while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _FileHandler(path, encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
    logger = logging.getLogger("steph")
    previous = logger.level
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()
