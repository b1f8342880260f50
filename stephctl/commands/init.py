"""`stephctl init DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._common import esc, handle_errors, out_console, print_json


def init(
    directory: Annotated[Path, typer.Argument(help="Project directory to create (may exist).")],
    encoder: Annotated[
        str, typer.Option("--encoder", help="Default encoder written to stephctl.yaml.")
    ] = "tiny-cnn",
    cancer: Annotated[
        list[str] | None, typer.Option("--cancer", "-c", help="Cancer of the project (repeatable).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rewrite an existing stephctl.yaml.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Create the standard project layout and a commented stephctl.yaml."""
    from steph.project import init_project

    with handle_errors():
        layout = init_project(directory, encoder=encoder, cancers=cancer or [], force=force)
    if json_out:
        print_json({"project": str(layout.root), "config": str(layout.config_file)})
    else:
        out_console.print(f"initialised [bold]{esc(layout.root)}[/]")
        out_console.print(
            esc(
                f"edit {layout.config_file} and fill {layout.manifest}, then run `stephctl -p {directory} extract`"
            )
        )
