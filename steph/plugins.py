"""The one plugin loader: entry-point groups of stephctl, read and loaded the same way for all.

Commands (``stephctl.commands``), encoders (``stephctl.encoders``), merge methods
(``stephctl.merge_methods``), feature stores (``stephctl.feature_stores``) and stages
(``stephctl.stages``) are all entry points. :func:`discover` lists a group's entry points (stephctl's own first; from a source tree
without installed metadata, stephctl's declarations are read from ``pyproject.toml``);
:func:`load` loads one and hands the object to the caller's ``use`` (mount a command, call a
registry's ``register`` hook). Whatever goes wrong in either step makes that plugin *broken*:
it is logged once, in one format, with the plugin's name and package, and returned as a
:class:`Plugin` with the reason, so the rest keeps working and ``stephctl plugins`` can show it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OWN_PACKAGE = "stephctl"
GROUPS = {
    "command": "stephctl.commands",
    "encoder": "stephctl.encoders",
    "merge method": "stephctl.merge_methods",
    "feature store": "stephctl.feature_stores",
    "stage": "stephctl.stages",
}
"""Plugin kind -> entry-point group."""


@dataclass(frozen=True)
class Origin:
    """Where a plugin (or a registered name) comes from."""

    package: str
    version: str
    entry_point: str = ""

    def describe(self) -> str:
        return f"{self.package} {self.version}".strip()


@dataclass(frozen=True)
class Broken:
    """A plugin entry point that failed to load."""

    name: str
    origin: Origin
    reason: str


@dataclass(frozen=True)
class Plugin:
    """One entry point of a group after loading: ``status`` is ok, broken or conflict."""

    kind: str
    name: str
    origin: Origin
    status: str = "ok"
    reason: str = ""
    obj: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def broken(self) -> Broken:
        return Broken(self.name, self.origin, self.reason)

    def to_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "package": self.origin.package,
            "version": self.origin.version,
            "entry_point": self.origin.entry_point,
            "status": self.status,
            "reason": self.reason,
        }


def origin_of(ep: metadata.EntryPoint) -> Origin:
    """The distribution (name, version) that declares ``ep``; ``?`` when unknown."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return Origin(OWN_PACKAGE if isinstance(ep, _Declared) else "?", "", ep.value)
    return Origin(dist.metadata["Name"] or "?", dist.version or "", ep.value)


def discover(group: str, *, builtin: str | None = None) -> list[metadata.EntryPoint]:
    """The entry points of ``group``, stephctl's own first, then by name.

    Without installed metadata for stephctl (a source tree on ``sys.path``), its declarations
    come from ``pyproject.toml``; ``builtin`` (an entry-point value such as
    ``steph.extractors.builtin:register``) is added when still missing, so built-ins always load.
    """
    eps = list(metadata.entry_points(group=group))
    if not any(origin_of(ep).package == OWN_PACKAGE for ep in eps):
        eps = _pyproject_entry_points(group) + eps
    if builtin and not any(ep.value == builtin for ep in eps):
        eps.insert(0, _Declared("builtin", builtin, group))
    return sorted(eps, key=lambda ep: (0 if origin_of(ep).package == OWN_PACKAGE else 1, ep.name))


def load(
    ep: metadata.EntryPoint,
    kind: str,
    use: Callable[[Any, Origin], None] | None = None,
    *,
    level: int = logging.WARNING,
) -> Plugin:
    """Load ``ep`` and pass the object to ``use``; any exception in either makes it broken.

    A broken plugin is logged (one line naming it and its package, at ``level``) and returned
    with the reason; this never raises, so one bad package cannot break the CLI.
    """
    origin = origin_of(ep)
    try:
        obj = ep.load()
        if use is not None:
            use(obj, origin)
    except Exception as exc:
        return unusable(kind, ep.name, origin, f"{type(exc).__name__}: {exc}", level=level)
    return Plugin(kind, ep.name, origin, "ok", "", obj)


def unusable(
    kind: str,
    name: str,
    origin: Origin,
    reason: str,
    *,
    status: str = "broken",
    level: int = logging.WARNING,
) -> Plugin:
    """Record (and log, in the one format) a plugin that cannot be used: broken or conflict."""
    verb = "failed to load" if status == "broken" else "is unusable"
    log.log(level, "%s plugin %r from %s %s: %s", kind, name, origin.package, verb, reason)
    return Plugin(kind, name, origin, status, reason)


def load_group(
    group: str,
    kind: str,
    use: Callable[[Any, Origin], None] | None = None,
    *,
    builtin: str | None = None,
    level: int = logging.WARNING,
) -> list[Plugin]:
    """:func:`load` every entry point of ``group`` once, in :func:`discover` order."""
    return [load(ep, kind, use, level=level) for ep in discover(group, builtin=builtin)]


class _Declared(metadata.EntryPoint):
    """One of stephctl's own entry points, declared in the source tree (no installed metadata)."""


def _pyproject_entry_points(group: str) -> list[metadata.EntryPoint]:
    """stephctl's own declarations of ``group`` in the source tree's pyproject.toml."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.is_file():
        return []
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the ``builtin`` fallback still loads the built-ins
        return []
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    table = data.get("project", {}).get("entry-points", {}).get(group, {})
    return [_Declared(name, value, group) for name, value in table.items()]
