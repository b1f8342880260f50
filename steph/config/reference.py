"""The configuration reference (docs/configuration.md) generated from the dataclasses themselves.

Field descriptions are the attribute docstrings in ``steph/config/*.py``; a test checks that
docs/configuration.md contains exactly this text, so the docs cannot drift from the code.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
from typing import Any, get_type_hints

from ..fileio import splice_between
from ._loader import to_plain


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` from the string literal that follows each annotated attribute."""
    source = textwrap.dedent(inspect.getsource(cls))
    node = ast.parse(source).body[0]
    if not isinstance(node, ast.ClassDef):
        raise TypeError(f"{cls!r}: its source is not a class definition")
    body = node.body
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _type_name(tp: Any) -> str:
    text = getattr(tp, "__name__", None) if not getattr(tp, "__args__", None) else None
    return (text or str(tp).replace("typing.", "")).replace(" | ", " or ")


def _sections(cls: type, prefix: str = "") -> list[tuple[str, type]]:
    out = [(prefix, cls)]
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += _sections(hints[f.name], f"{prefix}.{f.name}" if prefix else f.name)
    return out


def config_reference_markdown() -> str:
    from . import ProjectConfig

    lines: list[str] = []
    defaults = to_plain(ProjectConfig())
    for prefix, cls in _sections(ProjectConfig):
        hints = get_type_hints(cls)
        docs = attribute_docs(cls)
        title = f"`{prefix}:`" if prefix else "top level"
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        lines += [f"### {title}", "", summary, "", "| key | type | default | meaning |", "|---|---|---|---|"]
        node: Any = defaults
        for part in prefix.split(".") if prefix else []:
            node = node[part]
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                continue
            key = f.metadata.get("key") or (f"{prefix}.{f.name}" if prefix else f.name)
            default = node.get(f.name, {})
            lines.append(
                f"| `{key}` | {f.metadata.get('type') or _type_name(hints[f.name])} | `{default!r}` | {docs.get(f.name, '')} |"
            )
        lines.append("")
    return "\n".join(lines)


BEGIN = "<!-- BEGIN GENERATED: python -m steph.config.reference docs/configuration.md -->"
END = "<!-- END GENERATED -->"


def update_markdown(text: str) -> str:
    """``text`` with the generated block between the markers replaced by the current reference."""
    return splice_between(text, BEGIN, END, config_reference_markdown())


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys
    from pathlib import Path

    target = Path(sys.argv[1])
    target.write_text(update_markdown(target.read_text()))
