"""`stephctl splits`: patient-level K-fold splits from the labels, stratified by event and time."""

from __future__ import annotations

from typing import Annotated

import typer

from .._common import JsonReport, get_project, handle_errors, run_stage


def splits(
    ctx: typer.Context,
    cancer: Annotated[
        list[str] | None, typer.Option("--cancer", "-c", help="Cancer (repeatable; default: every cancer).")
    ] = None,
    folds: Annotated[int, typer.Option("--folds", "-K", min=2, help="Number of folds.")] = 5,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed (default: the project's seed).")
    ] = None,
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            min=0.0,
            max=0.95,
            help="Also a val column: this fraction of each fold's training patients (0 = none).",
        ),
    ] = 0.0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing split files.")] = False,
    json_out: JsonReport = False,
) -> None:
    """Write splits/<CANCER>/splits_<k>.csv from the labels: K patient-level folds, stratified by event and time.

    Every patient is tested in exactly one fold and is never in two sets of one fold. Events and
    censored patients are cut into time strata and dealt to the folds in a seeded order, so the
    folds get nearly equal numbers of events and similar follow-up. --val-fraction adds a val
    column drawn from each fold's training patients along the same strata. Existing split files
    are kept unless --overwrite (models trained on them would no longer match); then the folds
    beyond --folds are removed too. How the files were made is saved in <CANCER>_splits.json,
    which `stephctl check` reports.
    """
    from steph.splits import write_splits

    with handle_errors():
        layout, config = get_project(ctx)
    run_stage(
        ctx,
        write_splits,
        layout,
        config,
        as_json=json_out,
        cancers=cancer,
        folds=folds,
        seed=seed,
        val_fraction=val_fraction,
        overwrite=overwrite,
    )
