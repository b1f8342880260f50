"""`stephctl task-vector`: tau = theta - theta0 for every trained cancer model."""

from __future__ import annotations

from typing import Annotated

import typer

from .._common import get_project, handle_errors, run_stage
from .._tasks import ClearStaleLocksOption, ListTasksOption, TaskIndexOption, dispatch_tasks


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
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Write task_vectors/<CANCER>/fold_<k>.safetensors (tau = theta - theta0, every tensor) and its
    record; refuses models that did not start from the project's theta0."""
    if dispatch_tasks(
        ctx,
        "task-vector",
        list_tasks=list_tasks,
        task_index=task_index,
        as_json=json_out,
        selection={"cancers": cancer, "folds": fold},
        options={"overwrite": overwrite},
        clear_stale_locks=clear_stale_locks,
    ):
        return
    with handle_errors():
        layout, config = get_project(ctx)
    from steph.pipeline.task_vector import compute_task_vectors

    run_stage(
        ctx,
        compute_task_vectors,
        layout,
        config,
        cancers=cancer,
        folds=fold,
        overwrite=overwrite,
        as_json=json_out,
    )
