"""Typed per-method settings: reading them from ``merge:``, folder suffixes and help rows.

A merge method declares its settings as a frozen dataclass (``MergeMethod.settings_class``),
one field per setting with a default and ``metadata=doc("...")`` (the way mergekit
declares each method's parameters). A field whose name is a ``merge:`` field (``top_k``,
``gamma``, ``mix`` ...) takes that field's value, ``None`` there meaning the method's own
default; every other field is read from ``merge.options`` (``--option KEY=VALUE``). From the
one declaration come the value checks, the run-folder suffixes, ``--list-methods`` and the
settings tables of docs/merge.md, for built-in methods and plugins alike.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from ..config._loader import coerce
from ..config.merge import MergeConfig
from ..errors import ConfigError

GENERAL_FIELDS = frozenset(
    {"method", "sources", "source_fold", "folds", "epochs", "options", "gamma_grid", "inner_folds"}
)
"""``merge:`` fields that belong to no particular method."""

AUTO = "auto"
"""``merge.gamma: auto``: gamma chosen by inner cross-validation (:mod:`steph.merging.autotune`)."""


def merge_config_fields() -> frozenset[str]:
    """Names of the ``merge:`` fields a settings field may mirror."""
    return frozenset(f.name for f in dataclasses.fields(MergeConfig)) - GENERAL_FIELDS


def help_of(field: dataclasses.Field[Any]) -> str:
    return str(field.metadata.get("help", ""))


def legacy_settings(owner: str, config_fields: Sequence[str], option_defaults: Mapping[str, Any]) -> type:
    """A settings dataclass for a method that declares ``config_fields`` / ``option_defaults``."""
    hints = typing.get_type_hints(MergeConfig)
    defaults = MergeConfig()
    spec: list[Any] = [
        (name, hints[name], dataclasses.field(default=getattr(defaults, name))) for name in config_fields
    ]
    spec += [(key, type(value), dataclasses.field(default=value)) for key, value in option_defaults.items()]
    return dataclasses.make_dataclass(f"{owner}Settings", spec, frozen=True, kw_only=True)


def read_settings(cls: type, config: MergeConfig, method: str) -> Any:
    """An instance of the settings dataclass ``cls`` from ``config``.

    Raises:
        ConfigError: a value of the wrong type or outside a ``Literal``'s choices, naming the key.
    """
    hints = typing.get_type_hints(cls)
    top = merge_config_fields()
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in top:
            raw = getattr(config, field.name)
            if raw is None:
                continue
            if raw == AUTO and field.name == "gamma":
                values[field.name] = raw
                continue
            where = f"merge.{field.name}"
        else:
            if field.name not in config.options:
                continue
            raw, where = config.options[field.name], f"merge.options.{field.name}"
        try:
            values[field.name] = coerce(hints[field.name], raw, where)
        except ConfigError:
            raise ConfigError(
                f"{where} = {raw!r} for method {method!r}: expected {type_label(hints[field.name])}",
                hint=f"{help_of(field) or field.name}; e.g. --option {field.name}={field.default!r}"
                if where.startswith("merge.options")
                else f"{help_of(field) or field.name}; default {field.default!r}",
            ) from None
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"settings of merge method {method!r}: {exc}") from exc


def suffix(key: str, value: Any) -> str:
    """One folder-name suffix for a setting.

    >>> suffix("top_k", 3), suffix("sparse", False), suffix("base", "target"), suffix("scale", 0.5)
    ('top3', 'no-sparse', 'base-target', 'scale0.5')
    """
    label = "top" if key == "top_k" else key.replace("_", "-")
    if isinstance(value, bool):
        return label if value else f"no-{label}"
    if isinstance(value, float):
        return f"{label}{value:g}"
    if isinstance(value, str):
        return f"{label}-{value}"
    return f"{label}{value}"


def settings_suffixes(settings: Any) -> list[str]:
    """One suffix per field that differs from its default (a field's ``metadata["suffix"]``,
    a callable of the value, overrides the generic form)."""
    parts = []
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if value != field.default:
            custom = field.metadata.get("suffix")
            parts.append(custom(value) if custom else suffix(field.name, value))
    return [p for p in parts if p]


def describe_settings(cls: type) -> list[dict[str, Any]]:
    """``[{name, where, type, default, help}]`` of a settings dataclass (for --list-methods and
    the docs)."""
    hints = typing.get_type_hints(cls)
    top = merge_config_fields()
    rows = []
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        rows.append(
            {
                "name": field.name,
                "where": f"merge.{field.name}" if field.name in top else f"merge.options.{field.name}",
                "type": type_label(tp),
                "default": field.default,
                "help": help_of(field),
            }
        )
    return rows


def type_label(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "|".join(map(str, typing.get_args(tp)))
    if origin is not None:
        return " or ".join(type_label(a) for a in typing.get_args(tp))
    return "none" if tp is type(None) else getattr(tp, "__name__", str(tp))


def doc(help: str, **metadata: Any) -> dict[str, Any]:
    """A settings field's metadata: ``field(default=0.2, metadata=doc("fraction kept by TIES"))``."""
    return {"help": help, **metadata}
