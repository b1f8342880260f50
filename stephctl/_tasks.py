"""``--list-tasks`` and ``--task-index`` for every stage command (the CLI side of steph.hpc.tasks).

A stage command declares the two options with :data:`ListTasksOption` and :data:`TaskIndexOption`,
builds its usual selection keyword arguments (``cancers=``, ``folds=``, ``target=`` ...) and, first
thing, calls :func:`dispatch_tasks`; when that returns True the command is done::

    if dispatch_tasks(ctx, "train-source", list_tasks=list_tasks, task_index=task_index,
                      as_json=json_out, overrides=overrides, selection={"cancers": cancer, "folds": fold}):
        return

``stephctl slurm`` reuses the same path to learn a stage's task list from the stage's own options:
it invokes the stage command with ``--list-tasks`` and a collector in ``ctx.meta`` (see
:func:`collect_tasks`), so the options are parsed exactly as the stage parses them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._common import get_project, handle_errors, print_json, run_stage

if TYPE_CHECKING:
    from steph.units import WorkUnit

COLLECT_KEY = "stephctl.collect_tasks"
"""``ctx.meta`` key: when set to a list, ``--list-tasks`` appends ``(stage, units, pin_args)`` to it."""

ListTasksOption = Annotated[
    bool,
    typer.Option(
        "--list-tasks",
        help="Print this selection's units of work, one line each (index, key, done|pending), and exit; "
        "with --json a JSON list.",
    ),
]
TaskIndexOption = Annotated[
    int | None,
    typer.Option(
        "--task-index",
        min=0,
        help="Run only unit I of --list-tasks (a Slurm array task). Default: $SLURM_ARRAY_TASK_ID when set.",
        show_default=False,
    ),
]

ClearStaleLocksOption = Annotated[
    bool,
    typer.Option(
        "--clear-stale-locks",
        help="First remove this stage's locks left by dead tasks (dead pid on this host, or older than 48 h) "
        "and the .tmp-* files of writers dead on this host (other hosts': older than 48 h).",
    ),
]


def dispatch_tasks(
    ctx: typer.Context,
    stage: str,
    *,
    list_tasks: bool,
    task_index: int | None,
    as_json: bool,
    overrides: Mapping[str, Any] | None = None,
    selection: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    from_env: bool = True,
    clear_stale_locks: bool = False,
) -> bool:
    """Handle ``--list-tasks`` / ``--task-index`` for ``stage``; True when the command is done.

    Args:
        ctx: The stage command's context.
        stage: Stage name (``extract``, ``train-source``, ``task-vector``, ``merge``, ``evaluate``).
        list_tasks: ``--list-tasks`` was given.
        task_index: ``--task-index``; None = take ``$SLURM_ARRAY_TASK_ID`` when ``from_env``.
        as_json: ``--json``.
        overrides: The command's dotted config overrides.
        selection: What the command would process (the stage function's selection kwargs).
        options: Further keyword arguments of the stage function for the task run (``overwrite``).
        from_env: Whether ``$SLURM_ARRAY_TASK_ID`` may select a task (False for extract, which
            reads the Slurm array variables itself for ``--num-shards/--shard-index``).
        clear_stale_locks: ``--clear-stale-locks``: remove the stage's stale locks first (in
            every mode, also when the command then runs normally).
    """
    from steph.hpc.tasks import clear_stage_locks, pin_args, run_task, task_index_from_env
    from steph.hpc.tasks import list_tasks as plan_tasks

    with handle_errors():
        if clear_stale_locks:
            layout, config = get_project(ctx, dict(overrides or {}))
            for info in clear_stage_locks(stage, layout, config):
                logging.getLogger("stephctl").warning(
                    "removed stale lock %s (%s)", info.path, info.describe()
                )
        if task_index is None and not list_tasks and from_env:
            task_index = task_index_from_env()
        if task_index is None and not list_tasks:
            return False
        layout, config = get_project(ctx, dict(overrides or {}))
        chosen = dict(selection or {})
        if list_tasks:
            units = plan_tasks(stage, layout, config, chosen)
            collector = ctx.meta.get(COLLECT_KEY)
            if isinstance(collector, list):
                collector.append((stage, units, pin_args(stage, units)))
            else:
                print_task_list(units, as_json=as_json)
            return True
    run_stage(
        ctx, run_task, stage, layout, config, task_index, chosen, as_json=as_json, **dict(options or {})
    )
    return True


def print_task_list(units: list[WorkUnit], *, as_json: bool) -> None:
    """Exactly one line per unit on stdout (``index<TAB>key<TAB>done|pending``), or one JSON list."""
    if as_json:
        print_json([{"index": i, **unit.to_dict()} for i, unit in enumerate(units)])
        return
    sys.stdout.write(
        "".join(f"{i}\t{unit.key}\t{'done' if unit.done else 'pending'}\n" for i, unit in enumerate(units))
    )
    sys.stdout.flush()


def collect_tasks(ctx: typer.Context, stage: str, args: list[str]) -> tuple[list[WorkUnit], list[str]]:
    """The task list of ``stage`` for the stage options ``args``, parsed by the stage command itself.

    Returns:
        The units and the options that pin the list (e.g. extract's ``--num-shards N``).
    """
    root = ctx.find_root()
    group = root.command
    command = group.get_command(root, stage) if hasattr(group, "get_command") else None
    if command is None:
        from ._common import fail

        fail(f"unknown stage {stage!r}", hint="stages: extract, train-source, task-vector, merge, evaluate")
    collector: list[tuple[str, list[WorkUnit], list[str]]] = []
    root.meta[COLLECT_KEY] = collector
    try:
        with command.make_context(stage, [*args, "--list-tasks"], parent=root) as sub:
            command.invoke(sub)
    finally:
        root.meta.pop(COLLECT_KEY, None)
    if not collector:
        from ._common import fail

        fail(f"the {stage} command does not support --list-tasks", hint="it cannot run as a Slurm array")
    _, units, pins = collector[-1]
    return units, pins
