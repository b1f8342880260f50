"""`stephctl import-reference`: the authors' released null model (theta0) or one of their models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._common import esc, fail, get_project, handle_errors, out_console, print_json, run_stage


def import_reference(
    ctx: typer.Context,
    theta0: Annotated[
        Path | None,
        typer.Option("--theta0", help="Use a reference null-model .pth as the project's theta0."),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Bring a reference .pth (key 'model') in as the model of --cancer C --fold K, "
            "evaluated on that fold's test split.",
        ),
    ] = None,
    cancer: Annotated[
        list[str] | None, typer.Option("--cancer", "-c", help="The cancer of --checkpoint.")
    ] = None,
    fold: Annotated[list[int] | None, typer.Option("--fold", "-k", help="The fold of --checkpoint.")] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N (evaluating --checkpoint).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the theta0 or the model already there.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Import the authors' released checkpoints: first their null model as theta0 (--theta0),
    then each model as the cancer-specific model of one cancer and fold (--checkpoint)."""
    if theta0 is not None and checkpoint is not None:
        fail("--theta0 and --checkpoint are separate steps", hint="import theta0 first")
    if theta0 is None and checkpoint is None:
        fail("nothing to import", hint="pass --theta0 NULL.pth, or --checkpoint MODEL.pth -c C -k K")
    with handle_errors():
        layout, config = get_project(ctx, {"train.device": device})
    if theta0 is not None:
        from steph.theta0 import import_theta0

        with handle_errors():
            imported = import_theta0(layout, config, theta0, overwrite=overwrite)
        if json_out:
            print_json({"theta0": str(layout.theta0), **imported.meta})
        else:
            out_console.print(esc(f"theta0 imported to {layout.theta0} (sha256 {imported.sha256[:12]})"))
        return
    if cancer is None or fold is None or len(cancer) != 1 or len(fold) != 1:
        fail("--checkpoint needs exactly one --cancer and one --fold")
    from steph.pipeline.train_source import import_checkpoint

    run_stage(
        ctx,
        import_checkpoint,
        layout,
        config,
        cancer=cancer[0],
        fold=fold[0],
        path=checkpoint,
        overwrite=overwrite,
        as_json=json_out,
    )
