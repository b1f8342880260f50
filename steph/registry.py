"""Name -> object registries, filled by decorators and by entry-point plugins.

One generic :class:`Registry` serves feature encoders, merge methods and feature stores.
Built-ins and third-party packages register the same way: an entry point in the registry's
group names a callable that is called with the registry (or an object with a
``register(registry)`` method). Entry points are read and loaded by the one plugin loader,
:mod:`steph.plugins` (which also mounts the CLI's commands), lazily, the first time a registry
is asked for names or an item; a plugin that fails to load is recorded as broken (with the
reason) and does not break the rest;
a name claimed by two packages is recorded as a conflict, and asking for it raises a
:class:`~steph.errors.PluginError` naming both.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, NoReturn, TypeVar

from .errors import PluginError, UnknownNameError
from .plugins import Broken, Origin, load_group

__all__ = ["BUILTIN", "Broken", "Origin", "Registry", "describe_item"]

log = logging.getLogger(__name__)
T = TypeVar("T")


BUILTIN = Origin("stephctl", "", "")


class Registry(Generic[T]):
    """A named collection of ``T`` with decorator registration and entry-point discovery."""

    def __init__(
        self, kind: str, group: str | None = None, *, builtin: str | None = None, list_hint: str = ""
    ) -> None:
        self.kind = kind
        self.group = group
        self.builtin = builtin
        self.list_hint = list_hint
        self._items: dict[str, T] = {}
        self._lazy: dict[str, tuple[Callable[[], T], object]] = {}
        self._origins: dict[str, Origin] = {}
        self._broken: list[Broken] = []
        self._conflicts: dict[str, PluginError] = {}
        self._loaded = group is None
        self._loading = False
        self._lock = threading.RLock()
        self._current_origin: Origin | None = None

    # -- registration -------------------------------------------------------------------------
    def add(self, name: str, item: T, *, origin: Origin | None = None) -> T:
        """Register ``item`` under ``name``; two different owners of one name is an error."""
        origin = origin or self._current_origin or BUILTIN
        with self._lock:
            if self._claim(name, item, origin):
                self._items[name] = item
                self._origins[name] = origin
        return item

    def add_lazy(
        self, name: str, load: Callable[[], T], stand_in: object, *, origin: Origin | None = None
    ) -> None:
        """Register under ``name`` the item that ``load()`` returns, without calling it yet:
        :meth:`get` and :meth:`items` call it once, the first time they need the item (it must be
        an instance of ``type(stand_in)``); until then :meth:`light` returns ``stand_in``, the
        part of the item that needs no heavy import (a merge method's name, settings and checks,
        :mod:`steph.merging.catalog`). Names, membership and origins never load."""
        origin = origin or self._current_origin or BUILTIN
        with self._lock:
            if self._claim(name, stand_in, origin):
                self._lazy[name] = (load, stand_in)
                self._origins[name] = origin

    def _claim(self, name: str, item: object, origin: Origin) -> bool:
        """Whether ``name`` is free for ``item`` (False: already ``item``'s, or a recorded
        conflict while plugins load). Call with the lock held.

        Raises:
            PluginError: another item holds ``name`` (outside plugin discovery).
        """
        held = (
            self._items[name] if name in self._items else self._lazy[name][1] if name in self._lazy else None
        )
        if held is None or held is item:
            return held is None
        first = self._origins[name]
        error = PluginError(
            f"two plugins register the {self.kind} {name!r}: {first.describe() or first.package}"
            f" ({first.entry_point or 'built-in'}) and {origin.describe() or origin.package}"
            f" ({origin.entry_point or 'built-in'})",
            hint="uninstall one of the two packages or ask its authors to rename theirs",
        )
        if not self._loading:
            raise error
        # Discovery goes on (one clash must not hide every other plugin); using the name fails.
        log.warning("%s", error.message)
        self._conflicts.setdefault(name, error)
        return False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@ENCODERS.register("uni2-h")``."""

        def decorator(item: T) -> T:
            return self.add(name, item)

        return decorator

    # -- discovery ----------------------------------------------------------------------------
    def load_plugins(self) -> None:
        """Load every entry point of the group once (idempotent, thread-safe)."""
        with self._lock:
            if self._loaded or self._loading:
                return
            self._loading = True
            try:
                plugins = load_group(self.group or "", self.kind, self._register_plugin, builtin=self.builtin)
                self._broken.extend(p.broken() for p in plugins if not p.ok)
            finally:
                self._loading = False
                self._loaded = True

    def _register_plugin(self, target: Any, origin: Origin) -> None:
        """The loader's ``use``: call the entry point's hook with this registry."""
        hook = getattr(target, "register", None) if not callable(target) else target
        if hook is None:
            raise TypeError(f"entry point {origin.entry_point} is neither callable nor has register()")
        self._current_origin = origin
        try:
            hook(self)
        finally:
            self._current_origin = None

    # -- queries ------------------------------------------------------------------------------
    def names(self, pattern: str = "*") -> list[str]:
        self.load_plugins()
        return sorted(name for name in {*self._items, *self._lazy} if fnmatch.fnmatch(name, pattern))

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """The item registered as ``name``; unknown names list the valid ones."""
        self.load_plugins()
        if name in self._conflicts:
            raise self._conflicts[name]
        try:
            return self._items[name]
        except KeyError:
            pass
        if name in self._lazy:
            return self._load(name)
        self._unknown(name)

    def light(self, name: str) -> object:
        """The item registered as ``name`` as far as it is loaded: a lazy item's stand-in until
        :meth:`get` has loaded it (:meth:`add_lazy`), else the item itself.

        Raises:
            UnknownNameError, PluginError: as :meth:`get`.
        """
        self.load_plugins()
        if name in self._conflicts:
            raise self._conflicts[name]
        if name in self._items:
            return self._items[name]
        if name in self._lazy:
            return self._lazy[name][1]
        self._unknown(name)

    def _load(self, name: str) -> T:
        with self._lock:
            if name not in self._items:
                load, stand_in = self._lazy[name]
                item = load()
                if not isinstance(item, type(stand_in)):
                    raise TypeError(
                        f"{self.kind} {name!r}: the loaded {type(item).__name__} is not a {type(stand_in).__name__}"
                    )
                self._items[name] = item
            return self._items[name]

    def _unknown(self, name: str) -> NoReturn:
        """Raise the error for a name nothing holds: the closest name, broken plugins."""
        names = sorted({*self._items, *self._lazy})
        close = difflib.get_close_matches(name, names, n=1)
        message = f"unknown {self.kind} {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
        broken = [b for b in self._broken if b.name == name]
        if broken:
            message = (
                f"{self.kind} plugin {name!r} from {broken[0].origin.package} is broken: {broken[0].reason}"
            )
        hint = f"known {self.kind}s: {', '.join(names) or '(none)'}{self.list_hint}"
        if self._broken and not broken:
            failed = ", ".join(f"{b.name} from {b.origin.package}" for b in self._broken)
            hint += f"; plugins that failed to load: {failed} (`stephctl plugins` shows why)"
        raise UnknownNameError(message, hint=hint)

    def origin(self, name: str) -> Origin:
        self.load_plugins()
        return self._origins[name]

    @property
    def broken(self) -> list[Broken]:
        self.load_plugins()
        return list(self._broken)

    @property
    def conflicts(self) -> dict[str, str]:
        """Names claimed by two packages -> the message naming both (``get`` raises it)."""
        self.load_plugins()
        return {name: error.message for name, error in self._conflicts.items()}

    def items(self) -> list[tuple[str, T]]:
        """Every item (a conflicted name's first owner), lazy ones loaded (:meth:`light` does not load)."""
        return [
            (name, self._items[name] if name in self._items else self._load(name)) for name in self.names()
        ]


def unwrap(text: str) -> str:
    r"""Docstring ``text`` with each paragraph on one line (paragraphs stay apart; a line that
    starts a list item starts a new line), so help screens wrap it at the terminal's width
    instead of at the source's line breaks.

    >>> unwrap("Write a file and its\n    record.\n\n    Details:\n    - one\n    - two")
    'Write a file and its record.\n\nDetails:\n- one\n- two'
    """
    paragraphs = []
    for block in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in block.splitlines():
            line = line.strip()
            if lines and not line.startswith(("- ", "* ")):
                lines[-1] = f"{lines[-1]} {line}"
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(p for p in paragraphs if p)


def summary(text: str) -> str:
    r"""The first paragraph of ``text`` on one line: a whole sentence, never cut at a line break.

    >>> summary("Write theta0, the task vectors and trained weights the\n    method uses.\n\n    More.")
    'Write theta0, the task vectors and trained weights the method uses.'
    """
    return unwrap(text).split("\n\n", 1)[0].replace("\n", " ") if text.strip() else ""


def describe_item(item: Any) -> str:
    """One-line description of a registered item: its ``description``, else its docstring's
    first paragraph (:func:`summary`)."""
    return summary(getattr(item, "description", None) or getattr(item, "__doc__", None) or "")
