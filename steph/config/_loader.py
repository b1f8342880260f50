"""Strict construction of frozen config dataclasses from YAML mappings.

Unknown keys are errors with a did-you-mean; values are coerced to the annotated type (int,
float, bool, str, Path, Literal, list/tuple/dict of those, nested dataclasses, ``X | None``);
every message names the full key (``train.lr``). Floats must be finite (``.nan``/``.inf`` are
refused). User YAML is read by :func:`load_yaml`, which refuses what only an attacker or an
accident writes: python tags, anchors/aliases, nesting deeper than :data:`MAX_DEPTH` and files
larger than :data:`MAX_BYTES`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from ..errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

MAX_DEPTH = 32
"""Deepest nesting of mappings and lists accepted in user YAML (stephctl.yaml needs 4)."""
MAX_BYTES = 1_000_000
"""Largest user YAML file accepted (a real stephctl.yaml is a few kB)."""


def load_yaml(text: str, where: str) -> Any:
    """Parse user YAML safely: plain data only, no aliases, bounded depth and size.

    The events are checked before any node is built, so a deeply nested document cannot
    exhaust the stack and an alias bomb cannot exhaust memory.

    Raises:
        ConfigError: not valid YAML, a python tag, an anchor or alias, nesting deeper than
            :data:`MAX_DEPTH`, or more than :data:`MAX_BYTES` bytes.

    >>> load_yaml("a: {b: [1, 2]}", "x.yaml")
    {'a': {'b': [1, 2]}}
    """
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise ConfigError(
            f"{where}: larger than {MAX_BYTES // 1000} kB; not a stephctl configuration",
            hint="a stephctl.yaml holds a few sections of settings",
        )
    try:
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            line = f"line {event.start_mark.line + 1}" if event.start_mark else "?"
            if isinstance(event, yaml.AliasEvent):
                raise ConfigError(
                    f"{where}: {line}: YAML aliases (*{event.anchor}) are not accepted",
                    hint="write the value out in full",
                )
            if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)) and event.anchor:
                raise ConfigError(
                    f"{where}: {line}: YAML anchors (&{event.anchor}) are not accepted",
                    hint="write the value out in full",
                )
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError(
                        f"{where}: {line}: nested deeper than {MAX_DEPTH} levels",
                        hint="stephctl.yaml is a few levels deep: section, key, value",
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from exc


def build(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from mapping ``data``; ``where`` is the key prefix for messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    blocks_field: str | None = getattr(cls, "BLOCKS", None)  # e.g. merge.<method>: {...}
    blocks: dict[str, Any] = {}
    if blocks_field is not None:
        blocks = {k: data[k] for k in data if k not in names and isinstance(data[k], dict)}
        data = {k: v for k, v in data.items() if k not in blocks}
    unknown = [key for key in data if key not in names]
    if unknown:
        key = unknown[0]
        moved: dict[str, str] = getattr(cls, "MOVED", {})  # old key -> where it lives now
        close = difflib.get_close_matches(str(key), [*names, *moved], n=1)
        full = f"{where}.{key}" if where else str(key)
        raise ConfigError(
            f"unknown config key {full!r}"
            + (f"; did you mean {moved.get(close[0], close[0])!r}?" if close else ""),
            hint="valid keys here: "
            + ", ".join(n for n in names if n != blocks_field)
            + (
                f", or a block of one method's settings ({where or 'section'}.<method>: {{...}})"
                if blocks_field
                else ""
            ),
        )
    if blocks:
        data = {**data, blocks_field: {**(data.get(blocks_field) or {}), **blocks}}
    kwargs = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else key
        kwargs[key] = coerce(hints[key], value, full)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors: list[tuple[ConfigError, bool]] = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(option, value, where)
            except ConfigError as exc:
                errors.append((exc, _of_type(option, value)))
        typed = [exc for exc, of_type in errors if of_type]  # e.g. -inf for `float | "auto"`: not finite
        if len(errors) == 1 or len(typed) == 1:
            raise (errors[0][0] if len(errors) == 1 else typed[0])
        raise ConfigError(f"{where}: {value!r} fits none of {tp}")
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
    if dataclasses.is_dataclass(tp):
        return build(typing.cast(type, tp), value, where)
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {coerce(kt, k, f"{where}.{k}"): coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where}: {value!r} is not a finite number", hint="give a finite value")
        return number
    if tp is str:
        if isinstance(value, (dict, list, bool)) or value is None:
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value).expanduser()
    raise ConfigError(f"{where}: unsupported config type {tp!r}")  # pragma: no cover - programming error


def _of_type(option: Any, value: Any) -> bool:
    """Whether ``value`` already has the type ``option`` converts to (its error then says why)."""
    if option is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(option, type) and isinstance(value, option)


def to_plain(obj: Any) -> Any:
    """A dataclass tree as plain YAML/JSON-able data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        blocks_field = getattr(obj, "BLOCKS", None)  # written back as the YAML has them: merge.<method>
        plain = {
            f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != blocks_field
        }
        if blocks_field is not None:
            plain.update(to_plain(getattr(obj, blocks_field)))
        return plain
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(d, "train.epochs", 3)`` sets ``d["train"]["epochs"] = 3`` (creating maps)."""
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value
