"""`stephctl merge`: STEPH (default) and the baselines for one target cancer."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from steph.merging.method_settings import BUILTIN_SETTINGS
from steph.merging.settings import flag_fields

from .._common import AllowedSigners, esc, fail, handle_errors, out_console, print_json
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
    from steph.stages import MergeSelection

SETTING_FLAGS = flag_fields(BUILTIN_SETTINGS)
"""The method settings with a flag of their own (``doc(..., flag=HELP)`` in their settings
class): name -> (declaration, type). Each sets ``merge.options.<name>``, read by every
requested method that declares it; all other settings are ``--option KEY=VALUE``."""


def _flag_type(tp: Any) -> type:
    """The click type of a setting's flag: bool, int or float as declared, str otherwise
    (``Literal`` choices and ``float | "auto"``, checked by :func:`_setting_value`)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    plain: type = str
    if tp in (bool, int, float):
        plain = tp
    elif typing.get_origin(tp) is not typing.Literal and len(args) == 1 and args[0] in (int, float):
        plain = args[0]
    return plain


def _setting_option(name: str) -> inspect.Parameter:
    field, tp = SETTING_FLAGS[name]
    flag = "--" + name.replace("_", "-")
    base = _flag_type(tp)
    decl = f"{flag}/--no-{flag[2:]}" if base is bool else flag
    # a type computed at run time, for Typer to read (a static checker cannot follow it)
    annotation = Annotated[base | None, typer.Option(decl, help=field.metadata["flag"])]  # type: ignore[valid-type]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def with_setting_flags(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` (which takes ``**settings``) with one option per :data:`SETTING_FLAGS` entry
    in its signature, before ``--option``, for Typer to read."""
    signature = inspect.signature(command, eval_str=True)
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()]
    params = [p for p in params if p.name != "settings"]
    at = next(i for i, p in enumerate(params) if p.name == "option")
    params[at:at] = [_setting_option(name) for name in SETTING_FLAGS]
    # functions have no declared __signature__; inspect.signature (and so Typer) reads it when set
    command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return command


@with_setting_flags
def merge(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Option("--target", "-t", help="Target cancer, e.g. BRCA.")] = None,
    method: Annotated[
        list[str] | None,
        typer.Option("--method", "-m", help="Merge method (repeatable; default merge.method = steph)."),
    ] = None,
    fold: Annotated[
        list[int] | None, typer.Option("--fold", "-k", help="Target fold (repeatable; default: every fold).")
    ] = None,
    sources: Annotated[
        list[str] | None,
        typer.Option(
            "--sources",
            "-s",
            help="Source cancers (repeatable or comma-separated; default: all others), or auto:K: per fold the K "
            "with the highest measured transfer to the target's training split (run `stephctl transfer` first).",
        ),
    ] = None,
    source_fold: Annotated[
        int | None, typer.Option("--source-fold", help="Fold of the source task vectors.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Training epochs (default train.epochs).")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="Method option KEY=VALUE (repeatable), e.g. scale=0.5 for task-arithmetic; "
            "METHOD.KEY=VALUE sets one method's setting (merge.METHOD.KEY), e.g. steph.top_k=2.",
        ),
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    allowed_signers: AllowedSigners = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo runs that are already done.")] = False,
    paper: Annotated[
        bool,
        typer.Option(
            "--paper",
            help="Run the paper's comparison set: Model Avg., AdaMerging, TIES/Surgery/Iso-C AM (each also "
            "+ hypernetwork), ROUPKT, STEPH and its ablations.",
        ),
    ] = False,
    list_methods: Annotated[
        bool, typer.Option("--list-methods", help="List the merge methods with a reference each, and exit.")
    ] = False,
    list_tasks: ListTasksOption = False,
    task_index: TaskIndexOption = None,
    clear_stale_locks: ClearStaleLocksOption = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the report (or the method list) as JSON.")
    ] = False,
    **settings: Any,
) -> None:
    """Merge task vectors into a model for the target, fold by fold, and evaluate it on the test split.

    Writes merged/<TARGET>/<run>/fold_<k>/ (weights, meta.json, STEPH's coefficients.csv) and
    results/<TARGET>/<run>/fold_<k>/ (predictions.csv, metrics.json). <run> is the method name
    plus a suffix per non-default setting (steph-dense, steph-fixed-lambda0, ...). Each method's
    settings: --list-methods; those without a flag of their own are --option KEY=VALUE.
    """
    if list_methods:
        _print_methods(json_out)
        return
    run_stage_command(
        ctx,
        request(ctx, ctx.params),
        list_tasks=list_tasks,
        task_index=task_index,
        as_json=json_out,
        clear_stale_locks=clear_stale_locks,
    )


@stage_request("merge")
def request(ctx: typer.Context, params: Mapping[str, Any]) -> StageRequest[MergeSelection]:
    """The stage request of merge's parsed options (exit 1 without --target)."""
    from steph.stages import MergeSelection

    target = params.get("target")
    if not target:
        fail(
            "--target is required",
            hint="e.g. `stephctl merge --target BRCA`; `--list-methods` lists the methods",
        )
    sources = params.get("sources")
    overrides: dict[str, Any] = {
        "merge.sources": [s.strip() for item in sources for s in item.split(",") if s.strip()]
        if sources
        else None,
        "merge.source_fold": params.get("source_fold"),
        "merge.epochs": params.get("epochs"),
        "train.device": params.get("device"),
        "allowed_signers": _absolute(params.get("allowed_signers")),
    }
    for name in SETTING_FLAGS:
        overrides[f"merge.options.{name}"] = _setting_value(name, params.get(name))
    with handle_errors():
        overrides.update(_parse_options(list(params.get("option") or [])))
    selection = MergeSelection(
        target=target,
        methods=as_list(params.get("method")),
        folds=as_list(params.get("fold")),
        paper=bool(params.get("paper")),
    )
    return StageRequest("merge", selection, overrides, overwrite=bool(params.get("overwrite")))


def _absolute(path: Path | None) -> str | None:
    """``--allowed-signers`` as given on the command line (relative to the working directory,
    where ``allowed_signers:`` of stephctl.yaml is relative to the project)."""
    return None if path is None else str(path.expanduser().absolute())


def _setting_value(name: str, value: Any) -> Any:
    """The value of a setting's flag, checked against the setting's type (exit 1 if it does
    not fit): ``--gamma auto`` or a number, ``--mix`` one of its choices."""
    if value is None or not isinstance(value, str):
        return value
    from steph.config._loader import coerce
    from steph.errors import ConfigError

    field, tp = SETTING_FLAGS[name]
    flag = "--" + name.replace("_", "-")
    kinds = [_kind(a) for a in typing.get_args(tp) if a is not type(None)] or [_kind(tp)]
    try:
        return coerce(tp, _number_or_text(value), flag)
    except ConfigError as exc:
        if typing.get_origin(tp) is typing.Literal:
            fail(exc.message, hint=field.metadata["flag"])
        fail(
            f"{flag} {value!r} is neither {' nor '.join(kinds)}"
            if len(kinds) > 1
            else f"{flag} {value!r} is not {kinds[0]}",
            hint=field.metadata["flag"],
        )


def _number_or_text(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


def _kind(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " or ".join(map(str, typing.get_args(tp)))
    return {float: "a number", int: "an integer", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _parse_options(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (``merge.options.KEY``; ``METHOD.KEY=VALUE``: ``merge.METHOD.KEY``), each
    value read as user YAML (no aliases, bounded; plain text if not YAML)."""
    import yaml

    from steph.config._loader import load_yaml
    from steph.errors import ConfigError

    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--option {item!r} is not KEY=VALUE", hint="e.g. --option scale=0.5")
        method, dot, name = key.strip().rpartition(".")
        if dot and (not method or not name or "." in method):
            fail(
                f"--option {item!r} is not KEY=VALUE or METHOD.KEY=VALUE", hint="e.g. --option steph.top_k=2"
            )
        dotted = f"merge.{method}.{name}" if dot else f"merge.options.{name}"
        try:
            parsed[dotted] = load_yaml(value, f"--option {key.strip()}")
        except ConfigError as exc:
            if not isinstance(exc.__cause__, yaml.YAMLError):
                raise  # an alias, anchor or too deep: refused like in stephctl.yaml
            parsed[dotted] = value  # not YAML: plain text
    return parsed


def _print_methods(json_out: bool) -> None:
    from rich.table import Table

    from steph.merging import list_methods

    with handle_errors():
        rows = list_methods()
    if json_out:
        print_json(rows)
        return
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("method", "description", "reference", "settings (flag, or --option KEY=default)"):
        table.add_column(column, overflow="fold")
    for row in rows:  # each setting's spelling comes from the method's settings dataclass
        opts = [
            f["flag"].split("/")[0]
            if f["flag"].startswith("--") and "=" not in f["flag"]
            else f"{f['name']}={f['default']}"
            for f in row["fields"]
        ]
        table.add_row(*map(esc, (row["name"], row["description"], row["reference"], ", ".join(opts) or "-")))
    out_console.print(table)
