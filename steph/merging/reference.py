"""The settings tables of docs/merge.md, generated from the methods' settings dataclasses.

One table per built-in method (plugins document their own): each setting's type, default, its
key in stephctl.yaml (``merge.options``, shared, and the method's own block) and its
command-line spelling. A test checks that docs/merge.md holds exactly this text; after changing
a settings class run ``python -m steph.merging.reference docs/merge.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..fileio import splice_between
from .settings import describe_settings
from .spec import MethodSpec

BEGIN = "<!-- BEGIN GENERATED: python -m steph.merging.reference docs/merge.md -->"
END = "<!-- END GENERATED -->"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def settings_markdown(methods: Sequence[MethodSpec] | None = None) -> str:
    """The tables of ``methods`` (default: the built-in ones, in their registration order)."""
    if methods is None:
        from .catalog import BUILTIN

        methods = [spec() for spec, _ in BUILTIN]
    lines: list[str] = []
    for method in methods:
        rows = describe_settings(method.settings_class, method.name)
        lines += [f"#### `{method.name}`", ""]
        if not rows:
            lines += ["No settings.", ""]
            continue
        lines += [
            "| setting | type | default | stephctl.yaml | command line | meaning |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows:
            keys = f"`{row['where']}`, `{row['block']}`"
            lines.append(
                f"| `{row['name']}` | {_cell(row['type'])} | `{row['default']!r}` | {keys} "
                f"| `{row['flag']}` | {_cell(row['help'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def update_markdown(text: str) -> str:
    """``text`` with the generated block between the markers replaced by the current tables."""
    return splice_between(text, BEGIN, END, settings_markdown())


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys
    from pathlib import Path

    target = Path(sys.argv[1])
    target.write_text(update_markdown(target.read_text()))
