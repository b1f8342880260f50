"""`stephctl task-vector`: tau = theta - theta0 for every trained cancer model."""

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
    from steph.stages import TaskVectorSelection


@stage_request("task-vector")
def request(ctx: typer.Context, params: Mapping[str, Any]) -> StageRequest[TaskVectorSelection]:
    """The stage request of task-vector's parsed options."""
    from steph.stages import TaskVectorSelection

    return StageRequest(
        "task-vector",
        TaskVectorSelection(cancers=as_list(params.get("cancer")), folds=as_list(params.get("fold"))),
        overwrite=bool(params.get("overwrite")),
    )


def task_vector(
    ctx: typer.Context,
    cancer: Annotated[
        list[str] | None, typer.Option("--cancer", "-c", help="Cancer (repeatable; default: every cancer).")
    ] = None,
    fold: Annotated[
        list[int] | None, typer.Option("--fold", "-k", help="Fold (repeatable; default: every trained fold).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Recompute task vectors that exist.")
    ] = False,
    list_tasks: ListTasksOption = False,
    task_index: TaskIndexOption = None,
    clear_stale_locks: ClearStaleLocksOption = False,
    json_out: JsonReport = False,
) -> None:
    """Write task_vectors/<CANCER>/fold_<k>.safetensors (tau = theta - theta0, every tensor) and its
    record; refuses models that did not start from the project's theta0."""
    run_stage_command(
        ctx,
        request(ctx, ctx.params),
        list_tasks=list_tasks,
        task_index=task_index,
        as_json=json_out,
        clear_stale_locks=clear_stale_locks,
    )
