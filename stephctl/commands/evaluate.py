"""`stephctl evaluate`: did transfer help, by how much, and can I trust it?"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._common import (
    EXIT_ITEMS_FAILED,
    err_console,
    esc,
    out_console,
    print_json,
)
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
    from steph.pipeline.evaluate import EvaluationReport
    from steph.report import StageReport
    from steph.stages import EvaluateSelection


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


def evaluate(
    ctx: typer.Context,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", "-t", help="Target cancer to evaluate (repeatable; default: all)."),
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            "-m",
            help="Method or run folder to include (repeatable; default: all); steph picks its one run.",
        ),
    ] = None,
    fmt: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            "-f",
            help="stdout: rich table, or csv (summary rows) / json / markdown for scripts and papers.",
        ),
    ] = OutputFormat.table,
    bootstrap: Annotated[
        int | None,
        typer.Option(
            "--bootstrap",
            min=0,
            help="Bootstrap resamples per fold (overrides evaluate.bootstrap; 0 = none).",
        ),
    ] = None,
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Do not write reports/<TARGET>/ (HTML + PNG).")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    list_tasks: ListTasksOption = False,
    task_index: TaskIndexOption = None,
    clear_stale_locks: ClearStaleLocksOption = False,
) -> None:
    """Survival metrics per fold, cross-fold comparison, results/summary.csv and reports/<TARGET>/."""
    chosen = OutputFormat.json if json_out else fmt

    def render(report: StageReport) -> None:
        from steph.evaluation.tables import to_csv, to_markdown
        from steph.pipeline import evaluate as stage

        if not isinstance(report, stage.EvaluationReport):  # the evaluate stage reports its comparison too
            raise TypeError(f"evaluate returned a {type(report).__name__}, not an EvaluationReport")

        if chosen is OutputFormat.json:
            print_json(report.to_dict())
        elif report.summary is not None and chosen is OutputFormat.csv:
            sys.stdout.write(to_csv(report.summary))
        elif chosen is OutputFormat.markdown:
            sys.stdout.write(to_markdown(report.tables))
        elif chosen is OutputFormat.table:
            _print_tables(report)
        if chosen is not OutputFormat.json:
            _print_problems(report)
        if not report.ok:
            raise typer.Exit(EXIT_ITEMS_FAILED)

    run_stage_command(
        ctx,
        request(ctx, ctx.params),
        list_tasks=list_tasks,
        task_index=task_index,
        as_json=json_out or fmt is OutputFormat.json,
        clear_stale_locks=clear_stale_locks,
        render=render,
        show_progress=fmt is OutputFormat.table,
    )


@stage_request("evaluate")
def request(ctx: typer.Context, params: Mapping[str, Any]) -> StageRequest[EvaluateSelection]:
    """The stage request of evaluate's parsed options."""
    from steph.stages import EvaluateSelection

    overrides = {
        "evaluate.bootstrap": params.get("bootstrap"),
        "evaluate.report": False if params.get("no_report") else None,
    }
    selection = EvaluateSelection(
        targets=as_list(params.get("target")), methods=as_list(params.get("method"))
    )
    return StageRequest("evaluate", selection, overrides)


def _print_tables(report: EvaluationReport) -> None:
    from rich import box
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    for data in report.tables:
        table = Table(title=esc(data.title), box=box.SIMPLE_HEAD, header_style="bold", title_style="bold")
        for i, column in enumerate(data.columns):
            table.add_column(esc(column), justify="left" if i == 0 else "right", no_wrap=True)
        for row in data.rows:
            table.add_row(*map(esc, row))
        console = out_console
        if not console.is_terminal:  # pipes and files get the table's natural width, not 80 columns
            natural = Measurement.get(console, console.options.update(max_width=10_000), table).maximum
            console = Console(highlight=False, width=max(natural, console.width))
        console.print(table)
        console.print(esc("; ".join(data.notes)), style="dim", soft_wrap=True)
    if "summary_csv" in report.outputs:
        out_console.print(f"summary: {esc(report.outputs['summary_csv'])}")
    for target, path in report.reports.items():
        out_console.print(f"report {esc(target)}: {esc(path)}")


def _print_problems(report: EvaluationReport) -> None:
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/] {esc(warning)}", soft_wrap=True)
    for item in report.failed:
        err_console.print(f"[bold red]failed:[/] {esc(item.key)}: {esc(item.message)}", soft_wrap=True)
