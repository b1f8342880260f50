"""The ``stephctl`` command line: a root callback plus commands mounted from entry points.

Every command, the built-ins included, comes from the ``stephctl.commands`` entry-point group:
an entry is a command function (mounted as ``stephctl <name>``) or a Typer app (mounted as a
command group). Command modules import nothing heavy at import time, so ``stephctl --help``
stays fast; a plugin that fails to import is listed as broken and fails only when invoked.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click as typer._click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from . import _common
from ._common import EXIT_USER_ERROR, AppState, err_console, setup_logging

COMMAND_GROUP = "stephctl.commands"
# typer's vendored click (typer >= 0.20) has no exceptions.Abort; older typer re-exports click's.
_ABORTS = (typer.Abort, *([click_exceptions.Abort] if hasattr(click_exceptions, "Abort") else []))
_ORDER = [
    "init",
    "check",
    "<stages>",  # the pipeline stages, in their order (steph.stages)
    "explain",
    "predict",
    "export",
    "export-sources",
    "import-sources",
    "demo",
]


class StephGroup(TyperGroup):
    """Root group: built-in commands in pipeline order; usage errors exit 1 (a user error)."""

    def list_commands(self, ctx: Any) -> list[str]:
        from steph.stages import stage_names

        at = _ORDER.index("<stages>")
        order = [*_ORDER[:at], *stage_names(), *_ORDER[at + 1 :]]
        names = list(self.commands)
        return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click_exceptions.UsageError as exc:
            exc.show(file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        except click_exceptions.ClickException as exc:
            exc.show(file=sys.stderr)
            sys.exit(exc.exit_code)
        except _ABORTS:
            err_console.print("[red]aborted[/]")
            sys.exit(130)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=StephGroup,
    name="stephctl",
    help="STEPH end to end: extract features, train cancer-specific ABMIL models, build task vectors, "
    "merge them for a target cancer and evaluate. Exit codes: 0 all done, 1 user error, 2 some items failed.",
    no_args_is_help=True,
    add_completion=False,
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
    ctx.obj = AppState(project=project, verbosity=-1 if quiet else verbose)
    setup_logging(ctx.obj.verbosity)


# -- command plugins ------------------------------------------------------------------------------
class CommandPlugin:
    """One entry of the stephctl.commands group, loaded or broken."""

    def __init__(
        self, name: str, package: str, version: str, value: str, status: str, reason: str = ""
    ) -> None:
        self.name, self.package, self.version, self.value = name, package, version, value
        self.status, self.reason = status, reason

    def to_dict(self) -> dict[str, str]:
        return {
            "kind": "command",
            "name": self.name,
            "package": self.package,
            "version": self.version,
            "entry_point": self.value,
            "status": self.status,
            "reason": self.reason,
        }


LOADED_COMMANDS: list[CommandPlugin] = []


def _broken_command(name: str, reason: str, hint: str) -> Any:
    def broken(ctx: typer.Context) -> None:
        _common.fail(f"command {name!r} is unavailable: {reason}", hint)

    broken.__doc__ = f"BROKEN: {reason}"
    return broken


def _entry_points() -> list[metadata.EntryPoint]:
    eps = list(metadata.entry_points(group=COMMAND_GROUP))
    if not any(getattr(ep, "dist", None) and ep.dist.metadata["Name"] == "stephctl" for ep in eps):
        # Source tree without installed metadata: read our own declarations from pyproject.toml.
        eps = _fallback_entry_points() + eps
    return eps


def _fallback_entry_points() -> list[metadata.EntryPoint]:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.is_file():
        return []
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return []
    data = tomllib.loads(pyproject.read_text())
    table = data.get("project", {}).get("entry-points", {}).get(COMMAND_GROUP, {})
    return [metadata.EntryPoint(name, value, COMMAND_GROUP) for name, value in table.items()]


def mount_commands(target: typer.Typer) -> list[CommandPlugin]:
    """Mount every command entry point on ``target``; returns what was found."""
    found: dict[str, list[tuple[metadata.EntryPoint, str, str]]] = {}
    for ep in _entry_points():
        dist = getattr(ep, "dist", None)
        package = dist.metadata["Name"] if dist is not None else "stephctl"
        version = dist.version if dist is not None else ""
        found.setdefault(ep.name, []).append((ep, package, version))
    plugins: list[CommandPlugin] = []
    for name, claims in found.items():
        packages = sorted({pkg for _, pkg, _ in claims})
        ep, package, version = claims[0]
        if len(packages) > 1:
            reason = f"the command name {name!r} is claimed by several packages: {', '.join(packages)}"
            target.command(name, help=f"BROKEN: {reason}", context_settings=_LOOSE)(
                _broken_command(name, reason, "uninstall one of them")
            )
            plugins.append(CommandPlugin(name, " + ".join(packages), "", ep.value, "conflict", reason))
            continue
        try:
            obj = ep.load()
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            target.command(name, help=f"BROKEN: from {package}: {reason}", context_settings=_LOOSE)(
                _broken_command(name, reason, f"reinstall or fix the package {package!r}")
            )
            plugins.append(CommandPlugin(name, package, version, ep.value, "broken", reason))
            continue
        if isinstance(obj, typer.Typer):
            target.add_typer(obj, name=name)
        elif callable(obj):
            target.command(name)(obj)
        else:
            reason = f"entry point {ep.value} is neither a function nor a typer.Typer"
            target.command(name, help=f"BROKEN: {reason}", context_settings=_LOOSE)(
                _broken_command(name, reason, f"fix the package {package!r}")
            )
            plugins.append(CommandPlugin(name, package, version, ep.value, "broken", reason))
            continue
        plugins.append(CommandPlugin(name, package, version, ep.value, "ok"))
    return plugins


_LOOSE = {"ignore_unknown_options": True, "allow_extra_args": True}
LOADED_COMMANDS.extend(mount_commands(app))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
