"""Configuration of ``stephctl merge`` (section ``merge:``).

This section holds what belongs to no particular method (which method, sources, folds, epochs,
the grid of ``gamma: auto``). Each method's own settings (STEPH's ``top_k``, ``mix`` ...; TIES's
``density`` ...) are declared by the method's settings dataclass
(:mod:`steph.merging.method_settings`) and come from two layers, the second winning:

1. ``merge.options``: shared by every method that reads the key (``--top-k``, ``--option
   KEY=VALUE``);
2. the method's own block, ``merge.<method>: {...}`` (``merge: {steph: {top_k: 2}, ties:
   {density: 0.2}}``), kept in :attr:`MergeConfig.per_method` and checked against that
   method's settings dataclass before any work.

Command-line flags (``--top-k``, ``--option KEY=VALUE``) replace the same key in every block
(:func:`command_line_wins`), so a flag always wins over stephctl.yaml; ``--option
METHOD.KEY=VALUE`` sets one method's block. ``merge.top_k`` and the other settings that were
``merge:`` fields before 0.9 (:data:`MOVED_TO_OPTIONS`) are read as ``merge.options.<key>``,
with a warning (:func:`move_legacy_keys`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from ..errors import ConfigError

log = logging.getLogger(__name__)

MOVED_TO_OPTIONS: dict[str, Any] = {
    "top_k": None,
    "gamma": 0.005,
    "beta": 0.05,
    "mix": "hypernet",
    "fixed_lambda": 1.0,
    "weights": "hypernet",
    "sparse": True,
}
"""Method settings that were ``merge:`` fields, with their old defaults: ``merge.<key>`` is read
as ``merge.options.<key>``, and left out at its old default (which meant "the method's default":
a field at its default was never checked against the requested methods)."""


@dataclass(frozen=True, kw_only=True)
class MergeConfig:
    """STEPH and the baselines (docs/merge.md): what no single method owns."""

    method: str = "steph"
    """Merge method (stephctl merge --list-methods)."""
    sources: list[str] | None = None
    """Source cancers (None = every cancer of the project except the target), or [auto:K]: per target fold, the K cancers with the highest zero-shot C-index on the target's training split, measured by `stephctl transfer` (docs/transfer.md)."""
    source_fold: int = 0
    """Fold of the source models' task vectors (the reference uses fold 0 for every target fold)."""
    folds: list[int] | None = None
    """Target folds to merge (None = every fold with a target task vector)."""
    gamma_grid: list[float] = field(default_factory=lambda: [0.005, 0.05])
    """Candidates for gamma: auto (the paper's two values)."""
    inner_folds: int = 3
    """Folds of the inner cross-validation of gamma: auto (within the target's training split)."""
    epochs: int | None = None
    """Training epochs (None = train.epochs)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Method settings shared by every method that reads them, e.g. top_k: 3 (steph, roupkt), density: 0.2 (ties), scale: 0.5; each method's settings and defaults: stephctl merge --list-methods, docs/merge.md."""
    per_method: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"key": "merge.<method>", "type": "dict[str, Any] per method"}
    )
    """One method's own settings, written merge.<method>: {key: value} (e.g. steph: {top_k: 2}, ties: {density: 0.2}); they win over merge.options for that method (stephctl merge --list-methods lists each method's settings)."""

    BLOCKS: ClassVar[str] = "per_method"
    """Keys of ``merge:`` that are no field and hold a mapping are method blocks, kept here."""
    MOVED: ClassVar[dict[str, str]] = {key: f"options.{key}" for key in MOVED_TO_OPTIONS}
    """Old keys and where they live now (for the did-you-mean of a mistyped key)."""

    def __post_init__(self) -> None:
        if self.source_fold < 0:
            raise ConfigError(f"merge.source_fold must be >= 0, got {self.source_fold}")
        if not self.gamma_grid or any(g < 0 for g in self.gamma_grid):
            raise ConfigError(f"merge.gamma_grid must list values >= 0, got {self.gamma_grid}")
        if self.inner_folds < 2:
            raise ConfigError(f"merge.inner_folds must be >= 2, got {self.inner_folds}")
        for name, block in self.per_method.items():
            if not isinstance(block, Mapping):
                raise ConfigError(f"merge.{name}: expected a mapping of settings, got {block!r}")
        _require_finite("merge.options", self.options)
        for name, block in self.per_method.items():
            _require_finite(f"merge.{name}", block)


def _require_finite(where: str, value: Any) -> None:
    """Every number under ``value`` (a setting, or mappings and lists of them) is finite.

    Raises:
        ConfigError: a NaN or infinite number, named by its full key.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number", hint="give a finite value")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _require_finite(f"{where}.{key}", item)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _require_finite(f"{where}[{i}]", item)


def move_legacy_keys(
    data: dict[str, Any], overrides: Mapping[str, Any], *, quiet: bool = False
) -> dict[str, Any]:
    """Read the settings of :data:`MOVED_TO_OPTIONS` written the old way, ``merge.top_k`` in
    stephctl.yaml (``data``, changed in place, with a warning) or as a dotted override, as
    ``merge.options.<key>``; returns the overrides with those keys renamed.

    Raises:
        ConfigError: the same key in both ``merge:`` and ``merge.options`` of the file.
    """
    section = data.get("merge")
    if isinstance(section, dict):
        moved = [key for key in MOVED_TO_OPTIONS if key in section]
        if moved and isinstance(section.get("options") or {}, dict):
            options = section["options"] = dict(section.get("options") or {})
            for key in moved:
                if key in options:
                    raise ConfigError(
                        f"merge.{key} and merge.options.{key} are both set",
                        hint=f"keep merge.options.{key} only (merge.{key} is its old spelling)",
                    )
                value = section.pop(key)
                if value != MOVED_TO_OPTIONS[key]:
                    options[key] = value
            if not quiet:
                log.warning(
                    "config: %s moved into merge.options (read as merge.options.%s); "
                    "a method's own value goes in merge.<method>: {...}",
                    ", ".join(f"merge.{k}" for k in moved),
                    moved[0],
                )
    renamed: dict[str, Any] = {}
    moved_keys: dict[str, Any] = {}  # applied last: inside a whole merge.options given as well
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if len(parts) == 2 and parts[0] == "merge" and parts[1] in MOVED_TO_OPTIONS:
            if value != MOVED_TO_OPTIONS[parts[1]]:
                moved_keys[f"merge.options.{parts[1]}"] = value
            continue
        renamed[dotted] = value
    renamed.update(moved_keys)
    return renamed


def merge_config_of(plain: Mapping[str, Any]) -> MergeConfig:
    """The :class:`MergeConfig` saved as plain data in a merge record or bundle, records written
    before 0.9 (method settings as ``merge:`` fields) included.

    Raises:
        TypeError: a key that is no field of :class:`MergeConfig`.
    """
    data = {"merge": dict(plain)}
    move_legacy_keys(data, {}, quiet=True)
    return MergeConfig(**data["merge"])


def command_line_wins(data: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Drop from every ``merge.<method>`` block of ``data`` (stephctl.yaml) the keys that the
    command line sets for all methods (``merge.options.<key>``), so a flag wins over the file's
    blocks as over its ``merge.options``."""
    section = data.get("merge")
    if not isinstance(section, dict):
        return
    names = {f.name for f in fields(MergeConfig)}
    keys = set()
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if value is not None and len(parts) == 3 and parts[:2] == ["merge", "options"]:
            keys.add(parts[2])
    blocks = [v for k, v in section.items() if k not in names and isinstance(v, dict)]
    blocks += [v for v in (section.get(MergeConfig.BLOCKS) or {}).values() if isinstance(v, dict)]
    for block in blocks:
        for key in keys & set(block):
            del block[key]
