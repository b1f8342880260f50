"""`stephctl status`: what exists and what is missing, failures and locks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .._common import esc, get_project, handle_errors, out_console, print_json

if TYPE_CHECKING:
    from steph.hpc.status import ProjectStatus

_SHOWN = 5


def status(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """What exists and what is missing per stage, recorded failures, running and stale locks.

    Features per cancer, models and task vectors per cancer and fold, merges per target, results
    per target and method. Reads only; exit code 0.
    """
    from steph.hpc.status import project_status

    with handle_errors():
        layout, config = get_project(ctx)
        report = project_status(layout, config)
    if json_out:
        print_json(report.to_dict())
    else:
        _render(report)


def _render(report: ProjectStatus) -> None:
    from rich.markup import escape
    from rich.table import Table

    out_console.print(f"[bold]{esc(report.root)}[/] (encoder {esc(report.encoder)})")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("stage", "done", "per cancer / target", "missing"):
        table.add_column(column, overflow="fold")
    for stage in report.stages:
        colour = "green" if stage.complete else "yellow" if stage.done else "red"
        groups = ", ".join(f"{g} {d}/{t}" for g, (d, t) in stage.groups.items())
        missing = ", ".join(stage.missing[:_SHOWN]) + (" ..." if stage.total - stage.done > _SHOWN else "")
        if stage.errors:
            missing = "; ".join([missing, *stage.errors]) if missing else "; ".join(stage.errors)
        table.add_row(esc(stage.stage), f"[{colour}]{stage.done}/{stage.total}[/]", esc(groups), esc(missing))
    out_console.print(table)
    for stage in report.stages:
        for note in stage.notes:
            out_console.print(f"[yellow]{escape(stage.stage)}:[/] {escape(note)}")
    if report.results:
        results = Table(show_header=True, header_style="bold", box=None, pad_edge=False, title_justify="left")
        for column in ("target", "method", "folds", "mean test C-index"):
            results.add_column(column)
        for row in report.results:
            mean = "-" if row["c_index_mean"] is None else f"{row['c_index_mean']:.4f}"
            results.add_row(esc(row["target"]), esc(row["method"]), ",".join(map(str, row["folds"])), mean)
        out_console.print(results)
    out_console.print(f"results summary: {esc(report.summary_csv or 'not written yet (stephctl evaluate)')}")
    if report.failures:
        out_console.print(
            f"[red]{len(report.failures)} recorded failure(s)[/] ({esc(report.failures[0]['file'])}):"
        )
        for row in report.failures[:_SHOWN]:
            out_console.print(f"  {esc(row['key'])}: {esc(row['error'])}")
    for lock in report.locks:
        state = "[red]stale[/]" if lock.stale else "[yellow]running[/]"
        clear = (
            f"; clear with: stephctl {lock.stage} --clear-stale-locks" if lock.stale and lock.stage else ""
        )
        out_console.print(
            f"lock {state} {esc(lock.path)} (pid {lock.pid} on {esc(lock.host)}, {lock.age_hours:.2f} h{esc(clear)})"
        )
    if report.temp_files:
        out_console.print(
            f"{len(report.temp_files)} temporary file(s) left by interrupted writers (never counted as done), "
            f"e.g. {esc(report.temp_files[0])}; those of writers dead on this host are removed by a rerun or the "
            "--clear-stale-locks of the stage that wrote them"
        )
