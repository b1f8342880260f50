"""`stephctl explain`: attention heatmaps, top patches, STEPH transfer and QuPath files per patient."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from .._common import fail, get_project, handle_errors, run_stage


class HeatmapScale(str, Enum):
    """The choices of ``--scale`` (``steph.explain.heatmap.SCALES``)."""

    absolute = "absolute"
    percentile = "percentile"


def explain(
    ctx: typer.Context,
    target: Annotated[str, typer.Option("--target", "-t", help="Target cancer, e.g. BRCA.")],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            "-m",
            help="Model to explain: cancer-specific, a method with one run (steph) or a run folder (steph-top2).",
        ),
    ],
    fold: Annotated[int, typer.Option("--fold", "-k", help="Fold of the model.")],
    patient: Annotated[
        list[str] | None,
        typer.Option("--patient", "-P", help="Patient id from the target's labels (repeatable)."),
    ] = None,
    top: Annotated[
        int | None,
        typer.Option("--top", min=1, help="The N highest- and N lowest-risk test patients of the fold."),
    ] = None,
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare", help="Draw this method's map of the same fold beside, e.g. cancer-specific."
        ),
    ] = None,
    patches: Annotated[
        int, typer.Option("--patches", min=1, max=32, help="Most and least attended patches shown (each).")
    ] = 8,
    scale: Annotated[
        HeatmapScale,
        typer.Option(
            "--scale",
            help="Heatmap colours: absolute attention (one scale, 0 to the largest weight) or its "
            "percentile within the patient.",
        ),
    ] = HeatmapScale.absolute,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo pages whose inputs did not change.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the result (with every file written) as JSON.")
    ] = False,
) -> None:
    """Per-patient pages under reports/<TARGET>/patients/: attention heatmap on each slide, most and least attended patches, STEPH's w and lambda per source, and a QuPath GeoJSON of the patches."""
    if (not patient) == (top is None):
        fail("choose the patients: --patient P (repeatable) or --top N", hint="e.g. --top 2")
    if compare is not None and compare == method:
        fail(
            f"--compare {compare} is the model being explained",
            hint="compare with another method, e.g. cancer-specific",
        )
    with handle_errors():
        layout, config = get_project(ctx)
    from steph.explain.stage import explain_patients

    run_stage(
        ctx,
        explain_patients,
        layout,
        config,
        target=target,
        method=method,
        fold=fold,
        patients=patient,
        top=top,
        compare=compare,
        patches=patches,
        overwrite=overwrite,
        scale=scale.value,
        as_json=json_out,
    )
