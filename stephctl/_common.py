"""What every command shares: global state, error handling, progress rendering, output."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from steph.config import ConfigSource, ProjectConfig
    from steph.layout import ProjectLayout
    from steph.report import StageReport

AllowedSigners = Annotated[
    Path | None,
    typer.Option(
        "--allowed-signers",
        help="Trust list (ssh-keygen allowed-signers file; default allowed_signers: of stephctl.yaml): "
        "accept only a bundle whose <bundle>.sig verifies for a key it lists.",
    ),
]
"""``--allowed-signers``, the one declaration of the option of every command that takes bundles
from other labs (predict, import-sources, merge)."""

SigningKey = Annotated[
    Path | None,
    typer.Option(
        "--sign",
        help="SSH private key: also write <bundle>.sig (ssh-keygen -Y sign) for labs with a trust list.",
    ),
]
"""``--sign``, the one declaration of the option of the commands that write bundles (export,
export-sources)."""

JsonReport = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
"""``--json`` of the commands that print a stage report (train-source, task-vector, transfer,
predict, export, export-sources, import-sources, splits): one declaration. Commands whose JSON is
something else (evaluate's ``--format json``, merge's method list, extract's result) declare
their own."""

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False, soft_wrap=True)

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_ITEMS_FAILED = 2


@dataclass
class AppState:
    """Global options, set by the root callback and read by every command."""

    project: Path
    verbosity: int = 0  # -1 quiet, 0 normal, >= 1 verbose
    config: Path | None = None  # --config FILE; None = <project>/stephctl.yaml
    source: ConfigSource | None = None
    """The settings file, read once per command (:func:`get_project`)."""


def app_state(ctx: typer.Context) -> AppState:
    root = ctx.find_root()
    if not isinstance(root.obj, AppState):
        root.obj = AppState(project=Path("."))
    return root.obj


def get_project(
    ctx: typer.Context, overrides: Mapping[str, Any] | None = None, *, require: bool = True
) -> tuple[ProjectLayout, ProjectConfig]:
    """Layout and config of the project given by -p/--project, with the settings of
    --config FILE when given (flags in ``overrides`` win). The file is read once per command
    (:func:`steph.config.read_config`); each call resolves ``overrides`` on it (``stephctl
    slurm`` resolves one configuration per stage).

    This is the contract every command (built-in or plugin) uses to reach the project.

    Args:
        require: The project must have its settings file (``predict --model`` works in any
            folder with the default settings when false).
    """
    from steph.config import read_config
    from steph.layout import ProjectLayout

    state = app_state(ctx)
    if state.source is None:
        state.source = read_config(state.project, config_file=state.config)
    config = state.source.resolve(overrides, require=require)
    return ProjectLayout(state.project, config.paths), config


def esc(value: object) -> str:
    """``value`` as text that Rich prints literally: everything from files, names and paths goes
    through this before it meets markup (a ``[link=...]`` or ``[/]`` in a card is text, not style)."""
    return escape(str(value))


def fail(
    message: str,
    hint: str | None = None,
    code: int = EXIT_USER_ERROR,
    *,
    error_type: str = "UsageError",
    where: str | None = None,
) -> NoReturn:
    """Print one red line (+ hint) on stderr, and under --json one error document on stdout; exit."""
    err_console.print(f"[bold red]error:[/] {esc(message)}", markup=True, soft_wrap=True)
    if hint:
        err_console.print(f"[dim]hint:[/] {esc(hint)}", soft_wrap=True)
    emit_json_error(error_type, message, hint=hint, where=where, exit_code=code)
    raise typer.Exit(code)


@contextmanager
def handle_errors() -> Iterator[None]:
    """Turn library errors, and operating-system errors such as a full disk, into one red line +
    hint and exit code 1 (errors of one item are the stage's: they fail that item, exit 2)."""
    from steph.errors import StephError

    try:
        yield
    except StephError as exc:
        logging.getLogger("stephctl").debug("error", exc_info=True)
        fail(exc.message, exc.hint, error_type=type(exc).__name__, where=getattr(exc, "where", None))
    except OSError as exc:  # disk full, permission denied ... outside any one item
        from steph.fileio import os_error_message

        logging.getLogger("stephctl").debug("error", exc_info=True)
        message, _, hint = os_error_message(exc, "stephctl").partition(" (hint: ")
        where = str(exc.filename) if getattr(exc, "filename", None) is not None else None
        fail(message, hint.removesuffix(")") or None, error_type=type(exc).__name__, where=where)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        raise typer.Exit(130) from None


# -- the JSON error document ----------------------------------------------------------------------
class _Invocation:
    """What one ``stephctl`` invocation has put on stdout (reset by the root group per run)."""

    args: tuple[str, ...] = ()
    json_written = False


def begin_invocation(args: list[str] | tuple[str, ...]) -> None:
    """Called by the root group before parsing: the raw arguments decide whether --json is on."""
    _Invocation.args = tuple(args)
    _Invocation.json_written = False


def json_requested() -> bool:
    """Whether this invocation asked for JSON on stdout: a ``--json`` flag (or ``--format json``)
    among the command line's options, before any ``--``."""
    words = _Invocation.args
    if "--" in words:
        words = words[: words.index("--")]
    for i, word in enumerate(words):
        if word == "--json" or word == "--format=json":
            return True
        if word == "--format" and i + 1 < len(words) and words[i + 1] == "json":
            return True
    return False


def error_document(
    error_type: str,
    message: str,
    *,
    hint: str | None,
    where: str | None,
    exit_code: int,
    command: str | None = None,
) -> dict[str, Any]:
    """The one JSON document a failed command prints on stdout under --json::

    {"ok": false, "error": {"type": "MissingArtifactError", "message": "...", "where": null,
                            "hint": "...", "exit_code": 1, "command": "stephctl merge"}}
    """
    return {
        "ok": False,
        "error": {
            "type": error_type,
            "message": message,
            "where": where,
            "hint": hint,
            "exit_code": exit_code,
            "command": command,
        },
    }


def emit_json_error(
    error_type: str,
    message: str,
    *,
    hint: str | None = None,
    where: str | None = None,
    exit_code: int = EXIT_USER_ERROR,
    command: str | None = None,
) -> None:
    """Print the error document when --json is on and nothing was printed on stdout yet."""
    if not json_requested() or _Invocation.json_written:
        return
    command = command or _command_path()
    print_json(
        error_document(error_type, message, hint=hint, where=where, exit_code=exit_code, command=command)
    )


def _command_path() -> str | None:
    """``stephctl merge`` while a command runs, else None."""
    try:  # typer >= 0.20 vendors click as typer._click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - older typer on top of click
        from click import get_current_context  # type: ignore[no-redef]  # the same function, older typer
    ctx = get_current_context(silent=True)
    return ctx.command_path if ctx is not None else None


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]  # not subscriptable at run time on 3.10
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it per invocation)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _new_handler() -> logging.Handler:
    """Rich output on a terminal, timestamped lines otherwise."""
    if err_console.is_terminal:
        from rich.logging import RichHandler

        rich = RichHandler(console=err_console, show_path=False, markup=False, rich_tracebacks=False)
        rich.setFormatter(logging.Formatter("%(message)s"))
        return rich
    plain = _StderrHandler()
    plain.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    return plain


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    for name in ("steph", "stephctl"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if getattr(old, "_stephctl", False):
                logger.removeHandler(old)
        handler = _new_handler()
        handler.setLevel(level)
        handler._stephctl = True  # type: ignore[attr-defined]  # our own mark, read back with getattr above
        logger.addHandler(handler)
        logger.setLevel(min(level, logger.level or logging.DEBUG) if logger.level else level)
        logger.propagate = False


STEP_UNITS = frozenset({"stages"})
"""Units of a few long steps: shown by name with the elapsed time, never as a rate
(``advance(task, 0, item=name)`` announces the step that starts)."""


class CliProgress:
    """Renders steph progress events: rich bars on a terminal, periodic log lines otherwise."""

    def __init__(self, enabled: bool = True, interval_s: float = 30.0) -> None:
        self.enabled = enabled
        self.tty = err_console.is_terminal
        self.interval_s = interval_s
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._state: dict[str, list[float]] = {}  # task -> [done, total, start, last_log]
        self._log = logging.getLogger("stephctl.progress")

    def __enter__(self) -> CliProgress:
        if self.enabled and self.tty:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=False,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def start(self, task: str, total: int | None = None, *, unit: str = "items") -> None:
        now = time.monotonic()
        self._state[task] = [0.0, float(total) if total is not None else -1.0, now, now]
        self._units = getattr(self, "_units", {})
        self._units[task] = unit
        if self._bar is not None:
            if task in self._tasks:
                self._bar.reset(self._tasks[task], total=total)
            else:
                self._tasks[task] = self._bar.add_task(task, total=total, rate="")
        elif self.enabled:
            self._log.info("%s: starting (%s %s)", task, "?" if total is None else total, unit)

    def advance(self, task: str, n: int = 1, **info: Any) -> None:
        state = self._state.get(task)
        if state is None:
            self.start(task)
            state = self._state[task]
        state[0] += n
        now = time.monotonic()
        rate = state[0] / max(now - state[2], 1e-9)
        unit = self._units.get(task, "items")
        if unit in STEP_UNITS:
            self._step(task, state, now, info.get("item"), started=n == 0)
            return
        if self._bar is not None:
            self._bar.update(self._tasks[task], advance=n, rate=f"{rate:.1f} {unit}/s")
        elif self.enabled and now - state[3] >= self.interval_s:
            state[3] = now
            total = "?" if state[1] < 0 else int(state[1])
            extra = " ".join(f"{k}={v}" for k, v in info.items())
            self._log.info("%s: %d/%s %s (%.1f %s/s) %s", task, int(state[0]), total, unit, rate, unit, extra)

    def _step(self, task: str, state: list[float], now: float, item: Any, *, started: bool) -> None:
        """A few long steps (the demo's stages): which one runs and the time so far, no rate."""
        total = "?" if state[1] < 0 else int(state[1])
        if self._bar is not None:
            label = f"{task}: {item}" if item is not None and started else task
            self._bar.update(self._tasks[task], completed=state[0], description=label, rate="")
        elif self.enabled and started and item is not None:
            elapsed = time.strftime("%H:%M:%S", time.gmtime(now - state[2]))
            self._log.info("%s: %s (%d/%s), %s elapsed", task, item, int(state[0]) + 1, total, elapsed)

    def finish(self, task: str) -> None:
        state = self._state.get(task)
        if state is None:
            return
        if self._bar is None and self.enabled:
            elapsed = time.monotonic() - state[2]
            self._log.info(
                "%s: finished %d %s in %.1f s", task, int(state[0]), self._units.get(task, "items"), elapsed
            )


def print_json(data: Any) -> None:
    """Machine-readable output: exactly one JSON document on stdout."""
    _Invocation.json_written = True
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def render_report(report: StageReport, *, as_json: bool, show_all: bool = False) -> None:
    """Print a stage report (table on stderr-friendly stdout, or JSON) and exit 2 if items failed."""
    from steph.report import Status

    if as_json:
        print_json(report.to_dict())
    else:
        counts = ", ".join(f"{report.count(s)} {s.value}" for s in Status if report.count(s))
        out_console.print(f"[bold]{esc(report.stage)}[/]: {counts or 'nothing to do'}")
        rows = report.items if show_all or len(report.items) <= 40 else report.undone
        if rows:
            table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
            table.add_column("item")
            table.add_column("status")
            table.add_column("detail", overflow="fold")
            colour = {"done": "green", "skipped": "dim", "failed": "red", "locked": "yellow"}
            for item in rows:
                table.add_row(
                    esc(item.key), f"[{colour[item.status.value]}]{item.status.value}[/]", esc(item.message)
                )
            out_console.print(table)
    if not report.ok:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def run_stage(
    ctx: typer.Context, fn: Callable[..., StageReport], *args: Any, as_json: bool, **kwargs: Any
) -> StageReport:
    """Call a library stage with a progress renderer, then print its report (exit 2 on failures)."""
    quiet = app_state(ctx).verbosity < 0
    with handle_errors(), CliProgress(enabled=not quiet) as progress:
        report = fn(*args, progress=progress, **kwargs)
    render_report(report, as_json=as_json)
    return report
