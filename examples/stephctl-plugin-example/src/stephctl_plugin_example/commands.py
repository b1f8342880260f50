"""`stephctl count-patches`: how many patches each slide's feature file holds.

A command module imports only typer and ``stephctl._common`` at module level, so that
``stephctl --help`` stays fast; the library is imported inside the function.
"""

from __future__ import annotations

from typing import Annotated

import typer

from stephctl._common import get_project, handle_errors, run_stage


def count_patches(
    ctx: typer.Context,
    encoder: Annotated[
        str | None,
        typer.Option("--encoder", help="Features folder to read (default: the project's encoder)."),
    ] = None,
    cancer: Annotated[
        list[str] | None, typer.Option("--cancer", "-c", help="Cancer to count (repeatable).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Report the patch count of every labelled slide (exit 2 when a slide has no features)."""
    from .patch_counts import count_patches as count

    with handle_errors():
        layout, config = get_project(ctx, {"encoder": encoder})
    run_stage(ctx, count, layout, config, cancers=cancer, as_json=json_out)
