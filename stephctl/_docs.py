"""docs/cli.md generated from the live command tree (a test keeps the file current).

Regenerate with ``python -m stephctl._docs docs/cli.md``.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Any

BEGIN = "<!-- BEGIN GENERATED: python -m stephctl._docs docs/cli.md -->"
END = "<!-- END GENERATED -->"


def _param_row(param: Any) -> str | None:
    if getattr(param, "hidden", False) or param.name == "help":
        return None
    names = ", ".join(f"`{o}`" for o in [*param.opts, *getattr(param, "secondary_opts", [])])
    if param.param_type_name == "argument":
        names = f"`{param.name.upper()}`"
    help_text = " ".join((getattr(param, "help", None) or "").split())
    default = getattr(param, "default", None)
    show = (
        default not in (None, False, (), []) and not callable(default) and param.param_type_name == "option"
    )
    if show:
        shown = default.value if isinstance(default, Enum) else default
        help_text += f" (default: `{shown}`)"
    envvar = getattr(param, "envvar", None)
    if envvar:
        help_text += f" (env: `{envvar}`)"
    escaped = help_text.replace("|", "\\|")
    return f"| {names} | {escaped} |"


def _command_section(name: str, command: Any, level: int) -> list[str]:
    lines = [f"{'#' * level} `{name}`", ""]
    text = (command.help or "").strip()
    if text:
        lines += [" ".join(text.split()), ""]
    rows = [row for row in (_param_row(p) for p in command.params) if row]
    if rows:
        lines += ["| option | meaning |", "|---|---|", *rows, ""]
    subcommands = getattr(command, "commands", None)
    if subcommands and level > 2:
        for sub_name in sorted(subcommands):
            lines += _command_section(f"{name} {sub_name}", subcommands[sub_name], level + 1)
    return lines


def cli_reference_markdown() -> str:
    import typer

    from .main import app

    root = typer.main.get_command(app)
    lines = ["## Global options", "", "| option | meaning |", "|---|---|"]
    lines += [row for row in (_param_row(p) for p in root.params) if row]
    lines.append("")
    ctx = root.make_context("stephctl", [], resilient_parsing=True)
    from typer.core import TyperGroup

    if not isinstance(root, TyperGroup):
        raise TypeError("stephctl's app must be a command group")
    for name in root.list_commands(ctx):
        command = root.get_command(ctx, name)
        if command is not None:
            lines += _command_section(f"stephctl {name}", command, 3)
    return "\n".join(lines)


def update_markdown(text: str) -> str:
    """``text`` with the generated block between the markers replaced by the current reference."""
    from steph.fileio import splice_between

    return splice_between(text, BEGIN, END, cli_reference_markdown())


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    target = Path(sys.argv[1])
    target.write_text(update_markdown(target.read_text()))
