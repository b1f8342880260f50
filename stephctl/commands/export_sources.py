"""`stephctl export-sources`: a lab's cancer task vectors as one bundle, without a single patient."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._common import JsonReport, SigningKey, get_project, handle_errors, run_stage


def export_sources(
    ctx: typer.Context,
    cancer: Annotated[list[str], typer.Option("--cancer", "-c", help="Cancer to share (repeatable).")],
    fold: Annotated[
        list[int] | None,
        typer.Option("--fold", "-k", help="Fold (repeatable; default: every fold with a task vector)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Bundle file (default exports/sources-<CANCERS>.safetensors)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing bundle file.")] = False,
    sign: SigningKey = None,
    json_out: JsonReport = False,
) -> None:
    """Write the task vectors of --cancer with theta0 and a card (theta0 sha256, encoder, D,
    architecture, folds, cohort sizes); another lab brings them in with `stephctl import-sources`."""
    with handle_errors():
        layout, config = get_project(ctx)
    from steph.bundles.sources import export_sources as run

    run_stage(
        ctx,
        run,
        layout,
        config,
        cancers=cancer,
        folds=fold,
        out=out,
        overwrite=overwrite,
        sign=sign,
        as_json=json_out,
    )
