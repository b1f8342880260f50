"""`stephctl check`: validate a project's inputs and outputs before any long run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .._common import (
    EXIT_ITEMS_FAILED,
    CliProgress,
    app_state,
    esc,
    get_project,
    handle_errors,
    out_console,
    print_json,
)

if TYPE_CHECKING:
    from rich.table import Table

    from steph.check import CheckReport, Finding

_COLOURS = {"ok": "green", "warning": "yellow", "error": "red"}


def check(
    ctx: typer.Context,
    cancer: Annotated[
        list[str] | None, typer.Option("--cancer", "-c", help="Cancer (repeatable; default: every cancer).")
    ] = None,
    deep: Annotated[
        bool, typer.Option("--deep", help="Also read every feature value and refuse NaN or inf (slow).")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Check labels, splits, features, theta0, models and task vectors; one table of findings.

    Per cancer: patients with labels, splits and features; leakage between the sets of a fold;
    split patients without labels; missing feature files or keys; one D and the project's
    encoder; times and events that make no sense; folds whose training set is smaller than
    train.batch_size. Project-wide: one D across cancers; theta0, models and task vectors made
    from one another. Exit code 0 when nothing failed (warnings allowed), 2 when a check
    failed, 1 when the project cannot be read.
    """
    from steph.check import check_project

    with handle_errors():
        layout, config = get_project(ctx)
        with CliProgress(enabled=app_state(ctx).verbosity >= 0 and not json_out) as progress:
            report = check_project(layout, config, cancers=cancer, deep=deep, progress=progress)
    if json_out:
        print_json(report.to_dict())
    else:
        _render(report)
    if not report.ok:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _render(report: CheckReport) -> None:
    from rich.table import Table

    out_console.print(
        f"[bold]{esc(report.root)}[/] (encoder {esc(report.encoder)}{', deep scan' if report.deep else ''})"
    )
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("cancer", "check", "status", "detail"):
        table.add_column(column, overflow="fold")
    for name, counts in report.counts.items():
        folds = ",".join(map(str, counts.folds)) or "-"
        where = (
            "evaluation-only (transfer)"
            if counts.evaluation_only
            else f"{counts.in_splits} in splits (folds {folds})"
        )
        table.add_row(
            esc(name),
            "patients",
            "",
            f"{counts.labelled} labelled, {where}, {counts.with_features} with features, D={counts.dim or '-'}",
        )
        for finding in [f for f in report.findings if f.cancer == name]:
            _row(table, "", finding)
    for finding in [f for f in report.findings if f.cancer not in report.counts]:
        _row(table, finding.cancer, finding)
    out_console.print(table)
    verdict = "[green]all checks passed[/]" if report.ok else f"[red]{len(report.errors)} check(s) failed[/]"
    out_console.print(f"{verdict}, {len(report.warnings)} warning(s)")


def _row(table: Table, cancer: str, finding: Finding) -> None:
    level = finding.level.value
    detail = esc(finding.message) + (f" [dim](hint: {esc(finding.hint)})[/]" if finding.hint else "")
    table.add_row(esc(cancer), esc(finding.check), f"[{_COLOURS[level]}]{level}[/]", detail)
