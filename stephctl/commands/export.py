"""`stephctl export`: a trained model as one verified, self-contained bundle for other labs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._common import JsonReport, SigningKey, fail, get_project, handle_errors, run_stage


def export(
    ctx: typer.Context,
    target: Annotated[str, typer.Option("--target", "-t", help="Target cancer of the model.")],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            "-m",
            help="cancer-specific, a method with one run (steph) or a run folder (steph-top2, steph-dense ...).",
        ),
    ] = "steph",
    fold: Annotated[int | None, typer.Option("--fold", "-k", help="Fold of the model.")] = None,
    all_folds: Annotated[
        bool,
        typer.Option(
            "--all-folds", help="Every trained fold as one ensemble bundle (risk = mean of the folds')."
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Bundle file (default exports/<TARGET>-<method>-fold_<k>.safetensors)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing bundle file.")] = False,
    sign: SigningKey = None,
    json_out: JsonReport = False,
) -> None:
    """Write one safetensors bundle (no pickle): theta0, the task vectors and trained weights the
    method uses, and a JSON model card (encoder, patch size, MPP, time bins, cohorts, metrics, sha256
    of every part). `stephctl predict --model FILE` uses it in any lab."""
    if (fold is None) == (not all_folds):
        fail(
            "give exactly one of --fold K and --all-folds", hint="e.g. stephctl export -t BRCA -m steph -k 0"
        )
    with handle_errors():
        layout, config = get_project(ctx)
    from steph.bundles.export import export_model

    run_stage(
        ctx,
        export_model,
        layout,
        config,
        target=target,
        method=method,
        fold=fold,
        all_folds=all_folds,
        out=out,
        overwrite=overwrite,
        sign=sign,
        as_json=json_out,
    )
