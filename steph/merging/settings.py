"""Typed per-method settings: reading them from ``merge:``, folder suffixes and help rows.

A merge method declares its settings as a frozen dataclass (``MergeMethod.settings_class``),
one field per setting with a default and ``metadata=doc("...")`` (the way mergekit
declares each method's parameters). Its value comes from, each layer winning over the one
before it (:mod:`steph.config.merge`):

1. the field's default;
2. the ``merge:`` field of the same name, for the settings that mirror one (``top_k``,
   ``gamma``, ``mix`` ...; ``None`` there = the method's default), or ``merge.options.<name>``;
3. the method's own block ``merge.<method>.<name>`` (:func:`fold_block`, checked strictly by
   :func:`check_block`);

command-line flags and ``--option`` replacing the same key in stephctl.yaml. From the one
declaration come the value checks, the run-folder suffixes, the command-line spelling of each
setting (:func:`flag_of`), ``--list-methods`` and the settings tables of docs/merge.md
(:mod:`steph.merging.reference`), for built-in methods and plugins alike.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from ..config._loader import build, coerce
from ..config.merge import MergeConfig, method_layer_fields
from ..errors import ConfigError

GENERAL_FIELDS = frozenset(f.name for f in dataclasses.fields(MergeConfig)) - frozenset(method_layer_fields())
"""``merge:`` fields that belong to no particular method (derived from ``MergeConfig``)."""

AUTO = "auto"
"""``merge.gamma: auto``: gamma chosen by inner cross-validation (:mod:`steph.merging.autotune`)."""


def merge_config_fields() -> frozenset[str]:
    """Names of the ``merge:`` fields a settings field may mirror (marked in ``MergeConfig``)."""
    return frozenset(method_layer_fields())


def fold_block(merge: MergeConfig, method: str) -> MergeConfig:
    """``merge`` with the block ``merge.<method>`` folded into the general layer (it wins there)
    and no blocks left: what one method's settings are read from.

    Raises:
        ConfigError: a block value of the wrong type for the ``merge:`` field it sets.
    """
    if not merge.per_method:
        return merge
    block = dict(merge.per_method.get(method) or {})
    top = merge_config_fields()
    hints = typing.get_type_hints(MergeConfig)
    fields = {k: coerce(hints[k], v, f"merge.{method}.{k}") for k, v in block.items() if k in top}
    options = {**merge.options, **{k: v for k, v in block.items() if k not in top}}
    try:
        return dataclasses.replace(merge, per_method={}, options=options, **fields)
    except ConfigError as exc:
        exc.message = f"merge.{method}: {exc.message}"
        raise


def check_block(method: str, cls: type, block: Mapping[str, Any]) -> Any:
    """The settings ``cls`` built from the block ``merge.<method>`` alone: unknown keys (with a
    did-you-mean) and wrong types are refused, naming ``merge.<method>.<key>``."""
    data = dict(block)
    names = {f.name for f in dataclasses.fields(cls)}
    if data.get("gamma") == AUTO and "gamma" in names:
        data.pop("gamma")  # gamma: auto is resolved per fold (steph.merging.autotune)
    return build(cls, data, f"merge.{method}")


def unknown_block(name: str, methods: Sequence[str]) -> ConfigError:
    """The error for ``merge.<name>: {...}`` where ``name`` is neither a field nor a method."""
    candidates = [
        *(f.name for f in dataclasses.fields(MergeConfig) if f.name != MergeConfig.BLOCKS),
        *methods,
    ]
    close = difflib.get_close_matches(name, candidates, n=1)
    return ConfigError(
        f"unknown config key 'merge.{name}': neither a merge: field nor a merge method"
        + (f"; did you mean {close[0]!r}?" if close else ""),
        hint=f"a block merge.<method>: {{...}} holds one method's settings; methods: {', '.join(methods)} "
        "(`stephctl merge --list-methods`)",
    )


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


def describe_settings(cls: type, method: str = "<method>") -> list[dict[str, Any]]:
    """``[{name, where, block, flag, type, default, help}]`` of a settings dataclass (for
    --list-methods and the docs): ``where`` is the general layer, ``block`` the method's own
    key, ``flag`` the command-line spelling."""
    hints = typing.get_type_hints(cls)
    top = merge_config_fields()
    rows = []
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        rows.append(
            {
                "name": field.name,
                "where": f"merge.{field.name}" if field.name in top else f"merge.options.{field.name}",
                "block": f"merge.{method}.{field.name}",
                "flag": flag_of(field.name, field.default),
                "type": type_label(tp),
                "default": field.default,
                "help": help_of(field),
            }
        )
    return rows


def flag_of(name: str, example: Any) -> str:
    """How a setting is given on the command line: its ``stephctl merge`` flag for the settings
    that mirror a ``merge:`` field, ``--option NAME=VALUE`` otherwise.

    >>> flag_of("top_k", 5), flag_of("sparse", True), flag_of("density", 0.2)
    ('--top-k', '--sparse/--no-sparse', '--option density=0.2')
    """
    if name in merge_config_fields():
        flag = f"--{name.replace('_', '-')}"
        return f"{flag}/--no-{flag[2:]}" if isinstance(example, bool) else flag
    return f"--option {name}={'VALUE' if example is None else example}"


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
