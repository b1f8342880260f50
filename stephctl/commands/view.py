"""`stephctl view`: a read-only web page on this computer for one target's test patients."""

from __future__ import annotations

from typing import Annotated

import typer

from .._common import err_console, esc, get_project, handle_errors, out_console


def view(
    ctx: typer.Context,
    target: Annotated[str, typer.Option("--target", "-t", help="Target cancer, e.g. BRCA.")],
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="TCP port on 127.0.0.1 (0 picks a free one).")
    ] = 8765,
    host: Annotated[
        str, typer.Option("--host", help="Loopback address to listen on; other addresses are refused.")
    ] = "127.0.0.1",
) -> None:
    """Show a target's test patients in the browser: deep-zoom slides with the attention overlay, top patches, STEPH's transfer and the methods side by side.

    Reads the project, writes nothing. Listens on the loopback interface only (use an SSH tunnel
    from another machine); stop it with Ctrl-C.
    """
    from steph.view import ProjectView, serve

    with handle_errors():
        layout, config = get_project(ctx)
        project = ProjectView(layout, config, target)

        def ready(url: str) -> None:
            out_console.print(f"stephctl view: {esc(project.target)} at {esc(url)}")
            err_console.print("read-only; Ctrl-C stops it")

        serve(project, host=host, port=port, on_ready=ready)
