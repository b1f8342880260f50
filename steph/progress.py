"""Progress reporting from the library to whoever drives it.

The library never prints. Long-running functions take a ``progress`` argument implementing
:class:`Progress` and call ``start``/``advance``/``finish`` on named tasks; the CLI renders them
as rich progress bars on a terminal and as periodic log lines otherwise.
"""

from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    """Receiver of progress events. All methods must be cheap and must not raise."""

    def start(self, task: str, total: int | None = None, *, unit: str = "items") -> None:
        """A task named ``task`` begins with ``total`` steps (None if unknown)."""

    def advance(self, task: str, n: int = 1, **info: Any) -> None:
        """``n`` more steps of ``task`` are done; ``info`` carries e.g. ``item=<slide id>``.
        ``n = 0`` with an ``item`` announces the step that starts (the demo's stages)."""

    def finish(self, task: str) -> None:
        """The task is over (successfully or not)."""


class NullProgress:
    """A :class:`Progress` that ignores everything (the library default)."""

    def start(self, task: str, total: int | None = None, *, unit: str = "items") -> None:
        return None

    def advance(self, task: str, n: int = 1, **info: Any) -> None:
        return None

    def finish(self, task: str) -> None:
        return None


NULL_PROGRESS: Progress = NullProgress()
