"""The one route of every stage command: options -> typed selection -> stage plan -> stage run.

A stage command declares its options (:data:`ListTasksOption`, :data:`TaskIndexOption`,
:data:`ClearStaleLocksOption` among them), turns the parsed options into a :class:`StageRequest`
with a function registered by :func:`stage_request`, and hands it to :func:`run_stage_command`::

    @stage_request("train-source")
    def request(ctx, params):
        return StageRequest(TrainSourceSelection(as_list(params["cancer"]), as_list(params["fold"])),
                            overrides={"train.epochs": params["epochs"]})

    def train_source(ctx, cancer, fold, epochs, list_tasks, task_index, json_out, ...):
        run_stage_command(ctx, request(ctx, ctx.params), list_tasks=list_tasks, task_index=task_index,
                          as_json=json_out)

That runs the whole selection, prints the task list (``--list-tasks``) or runs one unit of it
(``--task-index`` or ``$SLURM_ARRAY_TASK_ID``), always through the stage (:mod:`steph.stages`).
``stephctl slurm`` parses a stage's options with the stage's own command, builds the same request
(:func:`plan_command`) and calls the stage's plan directly.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

import typer

from ._common import CliProgress, app_state, fail, get_project, handle_errors, print_json, run_stage

if TYPE_CHECKING:
    from steph.config import ProjectConfig
    from steph.config.project import Project
    from steph.report import StageReport
    from steph.units import WorkUnit

ListTasksOption = Annotated[
    bool,
    typer.Option(
        "--list-tasks",
        help="Print this selection's units of work, one line each (index, key, done|pending), and exit; "
        "with --json a JSON list.",
    ),
]


@dataclass(frozen=True)
class TaskSpan:
    """The units ``first`` to ``last`` (inclusive) of a task list: ``--task-index I`` or ``I-J``."""

    first: int
    last: int

    @property
    def indices(self) -> list[int]:
        return list(range(self.first, self.last + 1))


def parse_task_span(value: str | TaskSpan | int) -> TaskSpan:
    """``"I"`` or ``"I-J"`` (0 <= I <= J) as a :class:`TaskSpan`.

    >>> parse_task_span("3"), parse_task_span("4-7").indices
    (TaskSpan(first=3, last=3), [4, 5, 6, 7])
    """
    if isinstance(value, TaskSpan):
        return value
    text = str(value).strip()
    first, sep, last = text.partition("-")
    if not first.isdigit() or (sep and not last.isdigit()) or (sep and int(last) < int(first)):
        raise typer.BadParameter(f"{text!r} is not a task index I or a range I-J (0 <= I <= J)")
    return TaskSpan(int(first), int(last) if sep else int(first))


TaskIndexOption = Annotated[
    TaskSpan | None,
    typer.Option(
        "--task-index",
        parser=parse_task_span,
        metavar="I|I-J",
        help="Run only unit I of --list-tasks (a Slurm array task), or units I to J in this one process "
        "(`stephctl slurm --units-per-task`). Default: $SLURM_ARRAY_TASK_ID when set.",
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


S = TypeVar("S")


@dataclass
class StageRequest(Generic[S]):
    """What a stage command asks for, in the stage's own terms.

    Attributes:
        stage: The stage's name.
        selection: The stage's typed selection (e.g. ``TrainSourceSelection``).
        overrides: Dotted config overrides from the command's flags (None values are ignored).
        overwrite: Redo units that are done (``--overwrite``).
        devices: Extract's ``--devices``: one worker process per device.
        configure: Applied to the loaded config once (extract's ``--weights`` names the file of
            whichever encoder the config resolves to).
    """

    stage: str
    selection: S
    overrides: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    devices: tuple[str, ...] = ()
    configure: Callable[[ProjectConfig], ProjectConfig] | None = None


RequestBuilder = Callable[[typer.Context, Mapping[str, Any]], StageRequest[Any]]
_BUILDERS: dict[str, RequestBuilder] = {}


def stage_request(stage: str) -> Callable[[RequestBuilder], RequestBuilder]:
    """Decorator: register the function that turns ``stage``'s parsed command options
    (``ctx.params``) into a :class:`StageRequest` (used by the command and by ``stephctl slurm``)."""

    def decorator(builder: RequestBuilder) -> RequestBuilder:
        _BUILDERS[stage] = builder
        return builder

    return decorator


def as_list(values: Sequence[Any] | None) -> list[Any] | None:
    """A repeatable option's values as a list; None when none were given."""
    return list(values) if values else None


def open_stage_project(ctx: typer.Context, request: StageRequest[Any]) -> Project:
    """The project, loaded and resolved once for this request (raises library errors)."""
    from steph.config.project import Project

    layout, config = get_project(ctx, dict(request.overrides))
    if request.configure is not None:
        config = request.configure(config)
    return Project(layout, config)


def run_stage_command(
    ctx: typer.Context,
    request: StageRequest[Any],
    *,
    list_tasks: bool = False,
    task_index: TaskSpan | int | None = None,
    as_json: bool = False,
    from_env: bool = True,
    clear_stale_locks: bool = False,
    render: Callable[[StageReport], None] | None = None,
    show_progress: bool = True,
) -> None:
    """Run ``request``: its task list (``list_tasks``), one unit (``task_index``, else
    ``$SLURM_ARRAY_TASK_ID`` when ``from_env``) or the whole selection.

    Args:
        from_env: Whether ``$SLURM_ARRAY_TASK_ID`` may select a task (not when the command
            names its unit itself: extract's ``--shard-index``).
        clear_stale_locks: First remove the stage's stale locks (in every mode).
        render: Prints the report of a whole run (default: the report table or JSON, exit 2
            when items failed); a task run always prints the report.
        show_progress: Progress bars for a whole run with ``render`` (not when quiet).
    """
    from steph.stages import get_stage, task_index_from_env

    with handle_errors():
        stage = get_stage(request.stage)
        project = open_stage_project(ctx, request)
        if clear_stale_locks:
            for info in stage.clear_stale_locks(project):
                logging.getLogger("stephctl").warning(
                    "removed stale lock %s (%s)", info.path, info.describe()
                )
        if task_index is None and not list_tasks and from_env:
            task_index = task_index_from_env()
        if list_tasks:
            print_task_list(stage.plan(project, request.selection), as_json=as_json)
            return
    options = {"overwrite": request.overwrite, "devices": request.devices}
    span = parse_task_span(task_index) if task_index is not None else None
    if span is not None and span.first == span.last:
        run_stage(ctx, stage.run_task, project, span.first, request.selection, as_json=as_json, **options)
    elif span is not None:
        run_stage(ctx, stage.run_tasks, project, span.indices, request.selection, as_json=as_json, **options)
    elif render is None:
        run_stage(ctx, stage.run, project, request.selection, as_json=as_json, **options)
    else:
        enabled = show_progress and app_state(ctx).verbosity >= 0
        with handle_errors(), CliProgress(enabled=enabled) as progress:
            report = stage.run(
                project,
                request.selection,
                progress=progress,
                overwrite=request.overwrite,
                devices=request.devices,
            )
        render(report)


def print_task_list(units: list[WorkUnit], *, as_json: bool) -> None:
    """Exactly one line per unit on stdout (``index<TAB>key<TAB>done|pending``), or one JSON list."""
    if as_json:
        print_json([{"index": i, **unit.to_dict()} for i, unit in enumerate(units)])
        return
    sys.stdout.write(
        "".join(f"{i}\t{unit.key}\t{'done' if unit.done else 'pending'}\n" for i, unit in enumerate(units))
    )
    sys.stdout.flush()


def plan_command(ctx: typer.Context, stage: str, args: list[str]) -> tuple[list[WorkUnit], list[str]]:
    """The task list of ``stage`` for the stage options ``args``, parsed by the stage's own command.

    Returns:
        The units and the options that pin the list (e.g. extract's ``--num-shards N``).
    """
    from steph.stages import get_stage

    root = ctx.find_root()
    group = root.command
    command = group.get_command(root, stage) if hasattr(group, "get_command") else None
    if command is None:
        from steph.stages import stage_names

        fail(f"unknown stage {stage!r}", hint=f"stages: {', '.join(stage_names())}")
    builder = _BUILDERS.get(stage)
    if builder is None:
        fail(f"the {stage} command does not support --list-tasks", hint="it cannot run as a Slurm array")
    # plan inside the stage's context: what its options made for the request (extract's list
    # of --slides ids) lives as long as that context
    with command.make_context(stage, list(args), parent=root) as sub:
        request = builder(sub, sub.params)
        with handle_errors():
            chosen = get_stage(request.stage)
            units = chosen.plan(open_stage_project(ctx, request), request.selection)
    return units, chosen.pins(units)
