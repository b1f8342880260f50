"""`stephctl merge`: STEPH (default) and the baselines for one target cancer."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from steph.config.merge import MergeConfig, method_layer_fields

from .._common import fail, handle_errors, out_console, print_json
from .._tasks import (
    ClearStaleLocksOption,
    ListTasksOption,
    StageRequest,
    TaskIndexOption,
    as_list,
    run_stage_command,
    stage_request,
)


def setting_flag(name: str) -> Any:
    """The ``stephctl merge`` option of the ``merge:`` field ``name``, derived from its declaration
    in :class:`~steph.config.merge.MergeConfig` (type, ``method_layer`` help): ``--top-k``,
    ``--sparse/--no-sparse`` ... Method settings that mirror no field are ``--option KEY=VALUE``."""
    field = {f.name: f for f in dataclasses.fields(MergeConfig)}[name]
    tp = typing.get_type_hints(MergeConfig)[name]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = tp if tp in (bool, int, float) else args[0] if len(args) == 1 and args[0] in (int, float) else str
    flag = "--" + name.replace("_", "-")
    decl = f"{flag}/--no-{flag[2:]}" if base is bool else flag
    return Annotated[base | None, typer.Option(decl, help=field.metadata["flag_help"])]


SETTING_FLAGS = {name: setting_flag(name) for name in method_layer_fields()}
"""One option per ``merge:`` field that is the general layer of method settings."""
TopKOption = SETTING_FLAGS["top_k"]
GammaOption = SETTING_FLAGS["gamma"]
BetaOption = SETTING_FLAGS["beta"]
MixOption = SETTING_FLAGS["mix"]
FixedLambdaOption = SETTING_FLAGS["fixed_lambda"]
WeightsOption = SETTING_FLAGS["weights"]
SparseOption = SETTING_FLAGS["sparse"]


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
            "--sources", "-s", help="Source cancers (repeatable or comma-separated; default: all others)."
        ),
    ] = None,
    source_fold: Annotated[
        int | None, typer.Option("--source-fold", help="Fold of the source task vectors.")
    ] = None,
    top_k: TopKOption = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Training epochs (default train.epochs).")
    ] = None,
    gamma: GammaOption = None,
    beta: BetaOption = None,
    mix: MixOption = None,
    fixed_lambda: FixedLambdaOption = None,
    weights: WeightsOption = None,
    sparse: SparseOption = None,
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
) -> None:
    """Merge task vectors into a model for the target, fold by fold, and evaluate it on the test split.

    Writes merged/<TARGET>/<run>/fold_<k>/ (weights, meta.json, STEPH's coefficients.csv) and
    results/<TARGET>/<run>/fold_<k>/ (predictions.csv, metrics.json). <run> is the method name
    plus a suffix per non-default setting (steph-dense, steph-fixed-lambda0, ...).
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
def request(ctx: typer.Context, params: Mapping[str, Any]) -> StageRequest:
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
        "merge.top_k": params.get("top_k"),
        "merge.epochs": params.get("epochs"),
        "merge.gamma": _parse_gamma(params.get("gamma")),
        "merge.beta": params.get("beta"),
        "merge.mix": params.get("mix"),
        "merge.fixed_lambda": params.get("fixed_lambda"),
        "merge.weights": params.get("weights"),
        "merge.sparse": params.get("sparse"),
        "train.device": params.get("device"),
    }
    with handle_errors():
        overrides.update(_parse_options(list(params.get("option") or [])))
    selection = MergeSelection(
        target=target,
        methods=as_list(params.get("method")),
        folds=as_list(params.get("fold")),
        paper=bool(params.get("paper")),
    )
    return StageRequest("merge", selection, overrides, overwrite=bool(params.get("overwrite")))


def _parse_gamma(value: str | None) -> float | str | None:
    if value is None or value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        fail(f"--gamma {value!r} is neither a number nor auto", hint="e.g. --gamma 0.05 or --gamma auto")


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
    for column in ("method", "description", "reference", "settings (merge: field or --option KEY=default)"):
        table.add_column(column, overflow="fold")
    for row in rows:  # each setting's spelling comes from the method's settings dataclass
        opts = [
            *(f["flag"].split("/")[0] for f in row["fields"] if f["name"] in row["settings"]),
            *(f"{k}={v}" for k, v in row["options"].items()),
        ]
        table.add_row(row["name"], row["description"], row["reference"], ", ".join(opts) or "-")
    out_console.print(table)
