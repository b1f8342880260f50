"""The one error hierarchy of stephctl.

Every error says *what* went wrong, *where* (file, row, key or slide) and *how to fix it*
(``hint``). The CLI turns a :class:`StephError` into one red line plus the hint on stderr and
exit code 1; anything else escaping the library is a bug.
"""

from __future__ import annotations


class StephError(Exception):
    """Base class of every error the library raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class ConfigError(StephError):
    """A configuration value, key or flag is invalid."""


class LayoutError(StephError):
    """A path or identifier does not fit the project layout (unsafe slide id, bad cancer name)."""


class MissingArtifactError(StephError):
    """An input that an earlier stage should have produced is missing."""


class DataError(StephError):
    """Input data is malformed: labels, splits, features, predictions."""


class UnknownNameError(StephError, KeyError):
    """A registry lookup (encoder, merge method, command) failed."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return StephError.__str__(self)


class EncoderUnavailableError(StephError):
    """A feature encoder cannot be built: missing weights, package or network."""


class ConsistencyError(StephError):
    """Artifacts that must agree do not (theta0 hash, architecture, feature dimension)."""


class SlideError(StephError):
    """One slide cannot be processed; the stage records it and moves on."""


class LockedError(StephError):
    """Another process holds the lock of a unit of work."""


class PluginError(StephError):
    """A plugin failed to load or two plugins claim the same name."""
