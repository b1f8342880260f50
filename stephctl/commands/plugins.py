"""`stephctl plugins`: every command, encoder, merge method, feature store and stage, where it
comes from, and what is broken."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._common import out_console, print_json

if TYPE_CHECKING:
    from steph.registry import Registry

KINDS = ("commands", "encoders", "merge_methods", "feature_stores", "stages")
_COLOUR = {"ok": "green", "broken": "red", "conflict": "red"}


def plugins(
    json_out: Annotated[bool, typer.Option("--json", help="Print the listing as JSON.")] = False,
) -> None:
    """List commands, encoders, merge methods, feature stores and stages with the package (and
    version) each comes from.

    Broken plugins (an import error, two packages claiming one name) are listed with the
    reason; only using them fails. Exit code 0 even when some are broken.
    """
    from steph.data.stores import FEATURE_STORES
    from steph.extractors import ENCODERS
    from steph.merging import MERGE_METHODS
    from steph.stages import STAGES

    from ..main import LOADED_COMMANDS, app

    helps = _command_helps(app)
    commands = [
        {**p.to_dict(), "description": helps.get(p.name, "") if p.status == "ok" else ""}
        for p in LOADED_COMMANDS
    ]
    listing: dict[str, list[dict[str, str]]] = {
        "commands": sorted(commands, key=lambda row: row["name"]),
        "encoders": registry_rows(ENCODERS, "encoder"),
        "merge_methods": registry_rows(MERGE_METHODS, "merge method"),
        "feature_stores": _store_rows(FEATURE_STORES),
        "stages": _stage_rows(STAGES),
    }
    if json_out:
        print_json(listing)
        return
    for i, kind in enumerate(KINDS):
        if i:
            out_console.print()
        _print_table(kind.replace("_", " "), listing[kind])


def _command_helps(app: typer.Typer) -> dict[str, str]:
    """The summary (first paragraph, a whole sentence) of each mounted command's or group's help."""
    from steph.registry import summary

    helps: dict[str, str] = {}
    for info in app.registered_commands:
        text = info.help or (info.callback.__doc__ if info.callback else None) or ""
        helps[info.name or ""] = summary(text)
    for group in app.registered_groups:
        instance = group.typer_instance
        text = group.help or (instance.info.help if instance is not None else None) or ""
        helps[group.name or ""] = summary(text) if isinstance(text, str) else ""
    return helps


def registry_rows(registry: Registry[Any], kind: str) -> list[dict[str, str]]:
    """One row per registered name, conflict and broken entry point of ``registry``."""
    from steph import __version__
    from steph.registry import describe_item

    conflicts = registry.conflicts
    rows: list[dict[str, str]] = []
    for name, item in registry.items():
        origin = registry.origin(name)
        # Built-ins registered by import (not through the entry point) carry no version: it is ours.
        version = origin.version or (__version__ if origin.package == "stephctl" else "")
        status = "conflict" if name in conflicts else "ok"
        rows.append(
            {
                "kind": kind,
                "name": name,
                "package": origin.package,
                "version": version,
                "entry_point": origin.entry_point,
                "status": status,
                "reason": conflicts.get(name, ""),
                "description": describe_item(item),
            }
        )
    for broken in registry.broken:
        rows.append(
            {
                "kind": kind,
                "name": broken.name,
                "package": broken.origin.package,
                "version": broken.origin.version,
                "entry_point": broken.origin.entry_point,
                "status": "broken",
                "reason": broken.reason,
                "description": "",
            }
        )
    return rows


def _store_rows(registry: Registry[Any]) -> list[dict[str, str]]:
    """Feature-store rows, with the suffixes each store reads (``suffixes``, also in the detail)."""
    rows = registry_rows(registry, "feature store")
    stores = dict(registry.items())
    for row in rows:
        store = stores.get(row["name"]) if row["status"] != "broken" else None
        suffixes = " ".join(getattr(store, "suffixes", ()) or ())
        row["suffixes"] = suffixes
        if suffixes:
            row["description"] = f"{suffixes}: {row['description']}" if row["description"] else suffixes
    return rows


def _stage_rows(registry: Registry[Any]) -> list[dict[str, str]]:
    """Stage rows in pipeline order; the detail is the first line of the stage module's docstring."""
    import sys

    rows = registry_rows(registry, "stage")
    stages = dict(registry.items())
    ranked = []
    for row in rows:
        stage = stages.get(row["name"]) if row["status"] != "broken" else None
        if stage is not None:
            doc = (getattr(sys.modules.get(stage.plan.__module__), "__doc__", None) or "").strip()
            line = doc.splitlines()[0].split(" (:mod:")[0] if doc else ""
            row["description"] = line.replace("``", "").rstrip(".")
        ranked.append((getattr(stage, "order", 10**6), row["name"], row))
    return [row for _, _, row in sorted(ranked, key=lambda r: (r[0], r[1]))]


def _print_table(title: str, rows: list[dict[str, str]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"[bold]{title}[/]", title_justify="left", box=None, pad_edge=False, header_style="bold"
    )
    for column in ("name", "package", "version", "status"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for row in rows:
        colour = _COLOUR.get(row["status"], "white")
        detail = row["reason"] or row.get("description", "")
        table.add_row(
            escape(row["name"]),
            escape(row["package"]),
            row["version"],
            f"[{colour}]{row['status']}[/]",
            escape(detail),
        )
    out_console.print(table)
