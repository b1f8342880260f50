"""The next slide prepared in a background thread while the current one encodes.

A slide's preparation (open, MPP, thumbnail, tissue mask, grid, thumbnail image, first patch
batches: :func:`~steph.extraction.slide_job.prepare_slide`) takes from a fraction of a second to
several seconds of CPU; done between slides, the encoder (a GPU) would wait for it every time.
:class:`SlidesAhead` runs it for one slide ahead, in one thread: at most one slide is prepared
ahead, so memory holds at most one extra open slide and its first batches.

It only prepares; the caller decides which slide will be processed (not complete, not locked
by another task), still takes the slide's lock before writing its output, and receives a failed
preparation's exception when it turns to that slide, so that slide fails alone.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..config.extract import ExtractConfig
from ..slides.manifest import SlideEntry
from .slide_job import PreparedSlide, prepare_slide

log = logging.getLogger(__name__)


class SlidesAhead:
    """One slide prepared ahead, by key (the slide id).

    Use as a context manager: leaving it waits for a preparation in flight and closes any slide
    prepared but not taken.
    """

    def __init__(self, config: ExtractConfig) -> None:
        self._config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="steph-prepare")
        self._key: str | None = None
        self._future: Future[PreparedSlide] | None = None

    @property
    def pending(self) -> str | None:
        """The slide id prepared (or being prepared) ahead, if any."""
        return self._key

    def start(self, entry: SlideEntry, thumbnail: Path) -> None:
        """Begin preparing ``entry`` in the background; a slide prepared ahead and not taken
        is discarded first (so at most one is ever held)."""
        self.discard()
        self._key = entry.slide_id
        self._future = self._executor.submit(prepare_slide, entry, config=self._config, thumbnail=thumbnail)
        log.debug("slide %s: preparing ahead", entry.slide_id)

    def take(self, entry: SlideEntry, thumbnail: Path) -> PreparedSlide:
        """``entry`` prepared: the background preparation when it was started for it (waiting
        for it to finish), else prepared now in the calling thread.

        Raises:
            Whatever the preparation raised (a :class:`~steph.errors.SlideError` for a bad slide).
        """
        if self._key == entry.slide_id and self._future is not None:
            future, self._key, self._future = self._future, None, None
            return future.result()
        return prepare_slide(entry, config=self._config, thumbnail=thumbnail)

    def discard(self, key: str | None = None) -> None:
        """Drop the slide prepared ahead (only if it is ``key``, when given), closing it once
        its preparation ends; its errors are dropped too (it is not being processed)."""
        if self._future is None or (key is not None and key != self._key):
            return
        future, self._key, self._future = self._future, None, None
        if not future.cancel():
            future.add_done_callback(_close_quietly)

    def close(self) -> None:
        self.discard()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> SlidesAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_quietly(future: Future[PreparedSlide]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()
