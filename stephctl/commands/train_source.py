"""`stephctl train-source`: cancer-specific ABMIL models from a shared theta0, k-fold CV."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._common import esc, fail, get_project, handle_errors, out_console, print_json, run_stage
from .._tasks import (
    ClearStaleLocksOption,
    ListTasksOption,
    StageRequest,
    TaskIndexOption,
    as_list,
    run_stage_command,
    stage_request,
)

if TYPE_CHECKING:
    from steph.stages import TrainSourceSelection


@stage_request("train-source")
def request(ctx: typer.Context, params: Mapping[str, Any]) -> StageRequest[TrainSourceSelection]:
    """The stage request of train-source's parsed options."""
    from steph.stages import TrainSourceSelection

    return StageRequest(
        "train-source",
        TrainSourceSelection(cancers=as_list(params.get("cancer")), folds=as_list(params.get("fold"))),
        overrides={"train.epochs": params.get("epochs"), "train.device": params.get("device")},
        overwrite=bool(params.get("overwrite")),
    )


def train_source(
    ctx: typer.Context,
    cancer: Annotated[
        list[str] | None, typer.Option("--cancer", "-c", help="Cancer to train (repeatable; default: all).")
    ] = None,
    fold: Annotated[
        list[int] | None, typer.Option("--fold", "-k", help="Fold (repeatable; default: all).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Override train.epochs.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Retrain models that are already done.")
    ] = False,
    import_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--import-checkpoint",
            help="Bring a reference .pth (key 'model') in as the model of --cancer C --fold K, "
            "evaluated on that fold's test split.",
        ),
    ] = None,
    import_theta0: Annotated[
        Path | None,
        typer.Option("--import-theta0", help="Use a reference null-model .pth as the project's theta0."),
    ] = None,
    list_tasks: ListTasksOption = False,
    task_index: TaskIndexOption = None,
    clear_stale_locks: ClearStaleLocksOption = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Train one ABMIL survival model per cancer and fold, every one starting from theta0."""
    if import_theta0 is not None or import_checkpoint is not None:
        _import(ctx, cancer, fold, import_checkpoint, import_theta0, overwrite=overwrite, json_out=json_out)
        return
    run_stage_command(
        ctx,
        request(ctx, ctx.params),
        list_tasks=list_tasks,
        task_index=task_index,
        as_json=json_out,
        clear_stale_locks=clear_stale_locks,
    )


def _import(
    ctx: typer.Context,
    cancer: list[str] | None,
    fold: list[int] | None,
    import_checkpoint: Path | None,
    import_theta0: Path | None,
    *,
    overwrite: bool,
    json_out: bool,
) -> None:
    """``--import-theta0`` / ``--import-checkpoint``: bring reference weights into the layout."""
    with handle_errors():
        layout, config = get_project(ctx, request(ctx, ctx.params).overrides)
    if import_theta0 is not None:
        if import_checkpoint is not None:
            fail("--import-theta0 and --import-checkpoint are separate steps", hint="import theta0 first")
        from steph.theta0 import import_theta0 as import_null

        with handle_errors():
            theta0 = import_null(layout, config, import_theta0, overwrite=overwrite)
        if json_out:
            print_json({"theta0": str(layout.theta0), **theta0.meta})
        else:
            out_console.print(esc(f"theta0 imported to {layout.theta0} (sha256 {theta0.sha256[:12]})"))
        return
    if import_checkpoint is not None:
        if cancer is None or fold is None or len(cancer) != 1 or len(fold) != 1:
            fail("--import-checkpoint needs exactly one --cancer and one --fold")
        from steph.pipeline.train_source import import_checkpoint as import_model

        run_stage(
            ctx,
            import_model,
            layout,
            config,
            cancer=cancer[0],
            fold=fold[0],
            path=import_checkpoint,
            overwrite=overwrite,
            as_json=json_out,
        )
        return
