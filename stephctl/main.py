"""The ``stephctl`` command line: a root callback plus commands mounted from entry points.

Every command, the built-ins included, comes from the ``stephctl.commands`` entry-point group:
an entry is a command function (mounted as ``stephctl <name>``) or a Typer app (mounted as a
command group). Command modules import nothing heavy at import time, so ``stephctl --help``
stays fast; a plugin that fails to import is listed as broken and fails only when invoked.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup, TyperOption

try:  # typer >= 0.20 vendors click as typer._click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as click_exceptions  # type: ignore[no-redef]  # the same names, older typer

from steph import plugins, threads
from steph.plugins import Plugin
from steph.registry import unwrap

from . import _common
from ._common import EXIT_ITEMS_FAILED, EXIT_OK, EXIT_USER_ERROR, AppState, err_console, setup_logging

COMMAND_GROUP = "stephctl.commands"
# typer's vendored click (typer >= 0.20) has no exceptions.Abort; older typer re-exports click's.
_ABORTS = (typer.Abort, *([click_exceptions.Abort] if hasattr(click_exceptions, "Abort") else []))
_ORDER = [
    "init",
    "check",
    "splits",
    "<stages>",  # the pipeline stages, in their order (steph.stages)
    "explain",
    "predict",
    "export",
    "export-sources",
    "import-sources",
    "import-reference",
    "demo",
]


class _FlagOption(TyperOption):
    """A flag (``--json``, ``--no-sparse``) or counter (``-v``): no ``<bool>`` type column in --help."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _plain_flags(params: list[Any]) -> None:
    for param in params:
        if type(param) is TyperOption and (param.is_flag or param.count):
            param.__class__ = _FlagOption


def _plain_flags_everywhere(command: Any) -> None:
    """Every flag of ``command`` and its subcommands (mounted plugins and Typer groups included),
    and the -h/--help flag that click adds to each when help is first asked for."""
    _plain_flags(command.params)
    make_help_option = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        _plain_flags([option])
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        _plain_flags_everywhere(sub)


class StephGroup(TyperGroup):
    """Root group: built-in commands in pipeline order; flags without a ``<bool>`` metavar;
    usage errors exit 1 (a user error); under --json a failure prints one JSON error document."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_flags_everywhere(self)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        _plain_flags(params)  # typer appends --install/--show-completion after __init__
        return params

    def list_commands(self, ctx: Any) -> list[str]:
        from steph.stages import stage_names

        at = _ORDER.index("<stages>")
        order = [*_ORDER[:at], *stage_names(), *_ORDER[at + 1 :]]
        names = list(self.commands)
        return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Click's ``main`` never in standalone mode: errors become stephctl's exit codes here."""
        words = [str(a) for a in args] if args is not None else sys.argv[1:]
        _common.begin_invocation(words)
        try:
            rv = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except click_exceptions.UsageError as exc:
            exc.show(file=sys.stderr)
            command = exc.ctx.command_path if exc.ctx is not None else None
            _common.emit_json_error(
                "UsageError", exc.format_message(), exit_code=EXIT_USER_ERROR, command=command
            )
            sys.exit(EXIT_USER_ERROR)
        except click_exceptions.ClickException as exc:
            exc.show(file=sys.stderr)
            _common.emit_json_error(type(exc).__name__, exc.format_message(), exit_code=exc.exit_code)
            sys.exit(exc.exit_code)
        except _ABORTS:
            err_console.print("[red]aborted[/]")
            _common.emit_json_error("Aborted", "aborted", exit_code=130)
            sys.exit(130)
        except Exception as exc:  # a bug: the traceback and Python's exit status stay as they are
            _common.emit_json_error(
                type(exc).__name__,
                str(exc) or type(exc).__name__,
                hint="unexpected error (a bug in stephctl or a plugin): rerun with -vv and report it",
                exit_code=1,
            )
            raise
        code = rv if isinstance(rv, int) else 0
        if code not in (EXIT_OK, EXIT_ITEMS_FAILED):  # a command that exited without fail()
            _common.emit_json_error("Exit", f"stephctl exited with code {code}", exit_code=code)
        if not standalone_mode:
            return rv
        sys.exit(code)


app = typer.Typer(
    cls=StephGroup,
    name="stephctl",
    help="STEPH end to end: extract features, train cancer-specific ABMIL models, build task vectors, "
    "merge them for a target cancer and evaluate. Exit codes: 0 all done, 1 user error, 2 some items failed.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"stephctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    project: Annotated[
        Path,
        typer.Option(
            "-p",
            "--project",
            envvar="STEPHCTL_PROJECT",
            help="Project directory.",
            show_default="current folder",
        ),
    ] = Path("."),
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="STEPHCTL_CONFIG",
            help="Settings file to use instead of <project>/stephctl.yaml (paths in it stay relative "
            "to the project directory).",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        int, typer.Option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("-q", "--quiet", help="Only warnings and errors; no progress bars.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = AppState(project=project, verbosity=-1 if quiet else verbose, config=config)
    setup_logging(ctx.obj.verbosity)


# -- command plugins ------------------------------------------------------------------------------
LOADED_COMMANDS: list[Plugin] = []
"""Every entry of the stephctl.commands group, loaded or broken (``stephctl plugins`` lists them)."""


def _broken_command(name: str, reason: str, hint: str) -> Any:
    def broken(ctx: typer.Context) -> None:
        _common.fail(f"command {name!r} is unavailable: {reason}", hint)

    broken.__doc__ = f"BROKEN: {reason}"
    return broken


def mount_commands(target: typer.Typer) -> list[Plugin]:
    """Mount every command entry point on ``target`` through the one plugin loader
    (:mod:`steph.plugins`); returns what was found, broken and conflicting ones included."""
    found: dict[str, list[metadata.EntryPoint]] = {}
    for ep in plugins.discover(COMMAND_GROUP):
        found.setdefault(ep.name, []).append(ep)
    loaded: list[Plugin] = []
    for name, claims in found.items():
        packages = sorted({plugins.origin_of(ep).package for ep in claims})
        if len(packages) > 1:
            reason = f"the command name {name!r} is claimed by several packages: {', '.join(packages)}"
            origin = plugins.Origin(" + ".join(packages), "", claims[0].value)
            plugin = plugins.unusable("command", name, origin, reason, status="conflict", level=_QUIET)
            hint = "uninstall one of them"
        else:
            plugin = plugins.load(claims[0], "command", functools.partial(_mount, target, name), level=_QUIET)
            hint = f"reinstall or fix the package {plugin.origin.package!r}"
        if not plugin.ok:
            prefix = "" if plugin.status == "conflict" else f"from {plugin.origin.package}: "
            target.command(name, help=f"BROKEN: {prefix}{plugin.reason}", context_settings=_LOOSE)(
                _broken_command(name, plugin.reason, hint)
            )
        loaded.append(plugin)
    return loaded


def _mount(target: typer.Typer, name: str, obj: Any, origin: plugins.Origin) -> None:
    """A command entry is a function (``stephctl <name>``) or a Typer app (a command group)."""
    if isinstance(obj, typer.Typer):
        target.add_typer(obj, name=name)
    elif callable(obj):
        # paragraphs on one line: --help wraps them at the terminal, not at the source's breaks
        target.command(name, help=unwrap(obj.__doc__ or "") or None)(obj)
    else:
        raise TypeError(f"entry point {origin.entry_point} is neither a function nor a typer.Typer")


# Commands mount when stephctl.main is imported, before logging is set up: a broken one shows as
# BROKEN in --help and fails with its reason when invoked, so its load failure is a debug line.
_QUIET = logging.DEBUG


_LOOSE = {"ignore_unknown_options": True, "allow_extra_args": True}
LOADED_COMMANDS.extend(mount_commands(app))


def main() -> None:
    """Console-script entry point: threads sized for this process (before torch starts), then the app."""
    threads.configure()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
