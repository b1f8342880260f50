"""Typed per-method settings: reading them from ``merge:``, folder suffixes, flags and help rows.

A merge method declares its settings as a frozen dataclass (``MergeMethod.settings_class``;
the built-in ones in :mod:`steph.merging.method_settings`), one field per setting with a
default and ``metadata=doc("...")`` (the way mergekit declares each method's parameters). Its
value comes from, each layer winning over the one before it (:mod:`steph.config.merge`):

1. the field's default;
2. ``merge.options.<name>``, shared by every method that reads it;
3. the method's own block ``merge.<method>.<name>`` (:func:`fold_block`, checked strictly by
   :func:`check_block`);

command-line flags and ``--option`` replacing the same key in stephctl.yaml. From the one
declaration come the value checks, the run-folder suffixes, the command-line spelling of each
setting (:func:`flag_of`; ``doc(..., flag=HELP)`` gives a setting a flag of its own, generated
by :func:`flag_fields`), ``--list-methods`` and the settings tables of docs/merge.md
(:mod:`steph.merging.reference`), for built-in methods and plugins alike.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from ..config._loader import build, coerce
from ..config.merge import MergeConfig
from ..errors import ConfigError

AUTO = "auto"
"""``merge.gamma: auto``: gamma chosen by inner cross-validation (:mod:`steph.merging.autotune`)."""


def fold_block(merge: MergeConfig, method: str) -> MergeConfig:
    """``merge`` with the block ``merge.<method>`` folded into ``merge.options`` (it wins there)
    and no blocks left: what one method's settings are read from."""
    if not merge.per_method:
        return merge
    block = dict(merge.per_method.get(method) or {})
    return dataclasses.replace(merge, per_method={}, options={**merge.options, **block})


def check_block(method: str, cls: type, block: Mapping[str, Any]) -> Any:
    """The settings ``cls`` built from the block ``merge.<method>`` alone: unknown keys (with a
    did-you-mean) and wrong types are refused, naming ``merge.<method>.<key>``."""
    return build(cls, dict(block), f"merge.{method}")


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


def read_settings(cls: type, config: MergeConfig, method: str) -> Any:
    """An instance of the settings dataclass ``cls`` from ``config.options`` (the method's block
    already folded in, :func:`fold_block`); keys ``cls`` does not declare are ignored.

    Raises:
        ConfigError: a value of the wrong type or outside a ``Literal``'s choices, naming the key,
            or one the settings refuse (``top_k: 0``).
    """
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name not in config.options:
            continue
        raw, where = config.options[field.name], f"merge.options.{field.name}"
        try:
            values[field.name] = coerce(hints[field.name], raw, where)
        except ConfigError:
            raise ConfigError(
                f"{where} = {raw!r} for method {method!r}: expected {type_label(hints[field.name])}",
                hint=f"{help_of(field) or field.name}; e.g. {flag_of(field)}",
            ) from None
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"settings of merge method {method!r}: {exc}", hint="`stephctl merge --list-methods` lists them"
        ) from exc


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
    --list-methods and the docs): ``where`` is the shared key, ``block`` the method's own key,
    ``flag`` the command-line spelling."""
    hints = typing.get_type_hints(cls)
    rows = []
    for field in dataclasses.fields(cls):
        rows.append(
            {
                "name": field.name,
                "where": f"merge.options.{field.name}",
                "block": f"merge.{method}.{field.name}",
                "flag": flag_of(field),
                "type": type_label(hints[field.name]),
                "default": field.default,
                "help": help_of(field),
            }
        )
    return rows


def flag_of(field: dataclasses.Field[Any]) -> str:
    """How a setting is given on the command line: its own ``stephctl merge`` flag when its
    metadata has ``flag`` (:func:`flag_fields`), ``--option NAME=VALUE`` otherwise."""
    name, example = field.name, field.default
    if "flag" in field.metadata:
        flag = f"--{name.replace('_', '-')}"
        return f"{flag}/--no-{flag[2:]}" if isinstance(example, bool) else flag
    return f"--option {name}={'VALUE' if example is None else example}"


def flag_fields(classes: Sequence[type]) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    """The settings of ``classes`` that have a flag of their own: name -> (first declaration,
    type), in declaration order.

    Raises:
        TypeError: two classes declare a flagged setting with different types.
    """
    out: dict[str, tuple[dataclasses.Field[Any], Any]] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if "flag" not in field.metadata:
                continue
            seen = out.setdefault(field.name, (field, hints[field.name]))
            if seen[1] != hints[field.name]:
                raise TypeError(
                    f"setting {field.name!r} of {cls.__name__} is {hints[field.name]}, elsewhere {seen[1]}"
                )
    return out


def type_label(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "|".join(map(str, typing.get_args(tp)))
    if origin is not None:
        return " or ".join(type_label(a) for a in typing.get_args(tp))
    return "none" if tp is type(None) else getattr(tp, "__name__", str(tp))


def doc(help: str, *, flag: str | None = None, **metadata: Any) -> dict[str, Any]:
    """A settings field's metadata: ``field(default=0.2, metadata=doc("fraction kept by TIES"))``;
    ``flag`` (its help) gives the setting a ``stephctl merge`` flag of its own."""
    return {"help": help, **({"flag": flag} if flag is not None else {}), **metadata}


def check_search(merge: MergeConfig) -> None:
    """Refuse gamma_grid / inner_folds set without gamma: auto (they would be ignored)."""
    defaults = MergeConfig()
    blocks = [merge.options, *merge.per_method.values()]
    auto = any(block.get("gamma") == AUTO for block in blocks)
    if not auto and (merge.gamma_grid != defaults.gamma_grid or merge.inner_folds != defaults.inner_folds):
        raise ConfigError(
            "merge.gamma_grid and merge.inner_folds are only used with gamma: auto",
            hint="add --gamma auto, or drop them",
        )
