"""`stephctl import-sources`: another lab's cancer task vectors as sources for this project's merge."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._common import AllowedSigners, JsonReport, get_project, handle_errors, run_stage


def import_sources(
    ctx: typer.Context,
    bundle: Annotated[Path, typer.Argument(help="Bundle written by `stephctl export-sources`.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace task vectors of the same cancer and fold.")
    ] = False,
    allowed_signers: AllowedSigners = None,
    json_out: JsonReport = False,
) -> None:
    """Verify the bundle, refuse it if its theta0, encoder, D or architecture differ from this
    project's (a project without theta0 takes the bundle's), and write its task vectors under
    task_vectors/; `stephctl merge` then uses those cancers as sources like local ones."""
    with handle_errors():
        layout, config = get_project(ctx)
    from steph.bundles.sources import import_sources as run

    run_stage(
        ctx,
        run,
        layout,
        config,
        bundle,
        overwrite=overwrite,
        allowed_signers=allowed_signers,
        as_json=json_out,
    )
