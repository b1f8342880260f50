"""`stephctl transfer`: the cross-cancer transferability study (zero-shot matrix, gains, factors)."""

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
    from steph.stages import TransferSelection


@stage_request("transfer")
def request(ctx: typer.Context, params: Mapping[str, Any]) -> StageRequest[TransferSelection]:
    """The stage request of transfer's parsed options."""
    from steph.stages import TransferSelection

    return StageRequest(
        "transfer",
        TransferSelection(targets=as_list(params.get("target"))),
        overrides={
            "transfer.bootstrap": params.get("bootstrap"),
            "transfer.permutations": params.get("permutations"),
        },
        overwrite=bool(params.get("overwrite")),
    )


def transfer(
    ctx: typer.Context,
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            "-t",
            help="Target cancer (repeatable; default: every cancer, evaluation-only ones included).",
        ),
    ] = None,
    bootstrap: Annotated[
        int | None,
        typer.Option(
            "--bootstrap",
            min=0,
            help="Resamples per test fold (default transfer.bootstrap, 200).",
            show_default=False,
        ),
    ] = None,
    permutations: Annotated[
        int | None,
        typer.Option(
            "--permutations",
            min=0,
            help="Permutations of the factor p-values (default transfer.permutations, 2000).",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Recompute targets that are done.")] = False,
    list_tasks: ListTasksOption = False,
    task_index: TaskIndexOption = None,
    clear_stale_locks: ClearStaleLocksOption = False,
    json_out: JsonReport = False,
) -> None:
    """Apply every source's cancer-specific model to every target's test patients, fold by fold
    (zero-shot), and write the source x target C-index matrix, the gains over each target's own
    model, the factors that explain them, a heatmap, a paper-style table and transfer/report.html
    (docs/transfer.md). One task per target; the study is rebuilt from every finished target."""
    run_stage_command(
        ctx,
        request(ctx, ctx.params),
        list_tasks=list_tasks,
        task_index=task_index,
        as_json=json_out,
        clear_stale_locks=clear_stale_locks,
    )
