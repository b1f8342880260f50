"""`stephctl demo [DIR]`: the whole pipeline on a generated synthetic cohort."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .._common import (
    EXIT_ITEMS_FAILED,
    CliProgress,
    app_state,
    esc,
    handle_errors,
    out_console,
    print_json,
    render_report,
)

if TYPE_CHECKING:
    from steph.demo import DemoReport


def demo(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Demo project directory (created if missing).")] = Path(
        "stephctl-demo"
    ),
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="A smoke test: a tiny cohort (6 test patients per fold) and short training; its C-indices are noise.",
        ),
    ] = False,
    only_generate: Annotated[
        bool,
        typer.Option("--only-generate", help="Only create the project and generate the synthetic slides."),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run the whole method on a generated synthetic cohort (no data to download).

    Generates slides of four cancers, then runs extract, train-source, task-vector, merge (target BRCA: STEPH, task arithmetic, ROUPKT), transfer (every source model applied to each cancer), explain (attention pages of two patients) and evaluate, and ends with the test C-index of every method next to the oracle (the generator's true risk) and where the patient pages are. A second run reuses everything already computed.
    """

    from steph.demo import run_demo

    quiet = app_state(ctx).verbosity < 0
    with handle_errors(), CliProgress(enabled=not quiet) as progress:
        result = run_demo(directory, quick=quick, only_generate=only_generate, progress=progress)
    if json_out:
        print_json(result.to_dict())
        if not result.ok:
            raise typer.Exit(EXIT_ITEMS_FAILED)
        return
    for stage in result.stages:
        if not stage.ok:
            render_report(stage, as_json=False)  # prints the failed items and exits 2
        counts = ", ".join(f"{n} {s}" for s, n in stage.to_dict()["counts"].items() if n)
        out_console.print(
            f"[bold]{stage.stage}[/]: {counts or 'nothing to do'} ({result.seconds[stage.stage]:.1f} s)"
        )
    if only_generate:
        out_console.print(
            f"generated the demo cohort in [bold]{esc(result.root)}[/]; run `stephctl demo {esc(directory)}` to continue"
        )
        return
    _print_table(result)


def _print_table(result: DemoReport) -> None:
    from rich.table import Table

    table = Table(title=f"{result.target}: test C-index over folds", header_style="bold", box=None)
    for column in ("method", "mean", "sd", "folds"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for score in result.scores:
        table.add_row(esc(score.method), f"{score.mean:.4f}", f"{score.sd:.4f}", str(score.folds))
    if result.oracle is not None:
        table.add_row("[dim]oracle (true risk)[/]", f"[dim]{result.oracle:.4f}[/]", "", "")
    out_console.print(table)
    where = result.report_path or result.root / "results"
    out_console.print(f"report: [bold]{esc(where)}[/]")
    for page in result.patient_pages:
        out_console.print(f"patient page: [bold]{esc(page)}[/]")
    if result.note:
        out_console.print(f"[yellow]note:[/] {esc(result.note)}")
