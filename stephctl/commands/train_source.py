"""`stephctl train-source`: cancer-specific ABMIL models from a shared theta0, k-fold CV."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._common import JsonReport
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
    list_tasks: ListTasksOption = False,
    task_index: TaskIndexOption = None,
    clear_stale_locks: ClearStaleLocksOption = False,
    json_out: JsonReport = False,
) -> None:
    """Train one ABMIL survival model per cancer and fold, every one starting from theta0.

    The authors' released models are imported instead with `stephctl import-reference`."""
    run_stage_command(
        ctx,
        request(ctx, ctx.params),
        list_tasks=list_tasks,
        task_index=task_index,
        as_json=json_out,
        clear_stale_locks=clear_stale_locks,
    )
