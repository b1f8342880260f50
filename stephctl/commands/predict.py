"""`stephctl predict`: risk, risk group and survival curve for new patients, from slides or features."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .._common import AllowedSigners, JsonReport, fail, get_project, handle_errors, run_stage

if TYPE_CHECKING:
    from steph.config import ProjectConfig
    from steph.layout import ProjectLayout

_MODEL = "Model"
_INPUT = "Patients"


def predict(
    ctx: typer.Context,
    slides: Annotated[
        list[Path] | None,
        typer.Argument(help="Slide files, one patient each (named after the file).", show_default=False),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help="CSV: patient_id,slide_id[,path,mpp]; rows with a path are extracted if needed, "
            "rows without use the project's features.",
            rich_help_panel=_INPUT,
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Bundle written by `stephctl export`.", rich_help_panel=_MODEL),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option("--target", "-t", help="Or a project model: target cancer.", rich_help_panel=_MODEL),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method", "-m", help="... its method (cancer-specific, steph ...).", rich_help_panel=_MODEL
        ),
    ] = None,
    fold: Annotated[
        int | None, typer.Option("--fold", "-k", help="... and its fold.", rich_help_panel=_MODEL)
    ] = None,
    encoder_weights: Annotated[
        Path | None,
        typer.Option(
            "--encoder-weights",
            help="Local weights file of the model's encoder (needed to extract slides when the model "
            "was trained with a weights file).",
        ),
    ] = None,
    mpp: Annotated[
        float | None,
        typer.Option("--mpp", help="Microns per pixel of slides that record none (as `extract --mpp`)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default predictions/<name>/ of the project)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Run name under predictions/ (default: the bundle's or model's name)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo a finished prediction run.")] = False,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Also write each patient's explain pages (attention heatmaps, top patches, STEPH "
            "transfer, QuPath GeoJSON) under patients/<patient_id>/ of the run; an ensemble shows "
            "its folds' mean attention.",
        ),
    ] = False,
    patches: Annotated[
        int,
        typer.Option(
            "--patches", min=1, help="With --explain: most and least attended patches shown per row."
        ),
    ] = 8,
    allow_download: Annotated[
        bool,
        typer.Option(
            "--allow-download",
            help="Let the encoder's weights come from the model hub when no local file is given "
            "(default: nothing is downloaded; slides to extract fail naming the file to provide).",
        ),
    ] = False,
    max_patches: Annotated[
        int | None,
        typer.Option(
            "--max-patches",
            min=1,
            help="Most patches a slide's features may declare (default max_patches: of stephctl.yaml, "
            "1,000,000); a file declaring more is refused before it is read.",
        ),
    ] = None,
    allowed_signers: AllowedSigners = None,
    json_out: JsonReport = False,
) -> None:
    """Predict new patients with a bundle (--model) or a project model (-t/-m/-k): features are
    reused or extracted with the model's encoder, patch size and MPP; writes predictions.csv (risk,
    risk group at the training median, hazards), survival.csv (S per yearly bin), failures.csv;
    with --explain, each patient's heatmap pages."""
    if (model is None) == (target is None and method is None and fold is None):
        fail(
            "give either --model BUNDLE or --target, --method and --fold",
            hint="e.g. --model BRCA.safetensors",
        )
    if model is None and (target is None or method is None or fold is None):
        fail("a project model needs --target, --method and --fold", hint="e.g. -t BRCA -m steph -k 0")
    if (manifest is None) == (not slides):
        fail(
            "give either slide files or --manifest CSV",
            hint="e.g. stephctl predict --manifest new.csv --model M",
        )
    with handle_errors():
        layout, config = _project(ctx, need_config=model is None, max_patches=max_patches)
    from steph.predict import predict_patients

    run_stage(
        ctx,
        predict_patients,
        layout,
        config,
        manifest,
        slides=slides or (),
        bundle=model,
        target=target,
        method=method,
        fold=fold,
        encoder_weights=encoder_weights,
        mpp=mpp,
        name=name,
        out=out,
        overwrite=overwrite,
        explain=explain,
        patches=patches,
        allow_download=allow_download,
        allowed_signers=allowed_signers,
        as_json=json_out,
    )


def _project(
    ctx: typer.Context, *, need_config: bool, max_patches: int | None = None
) -> tuple[ProjectLayout, ProjectConfig]:
    """The project; with a bundle, a folder without stephctl.yaml works too (default settings).
    ``--max-patches`` overrides ``max_patches:``."""
    return get_project(ctx, {"max_patches": max_patches}, require=need_config)
