"""`stephctl extract`: whole-slide images to patch-feature HDF5 files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._common import esc, fail, handle_errors, out_console, print_json
from .._tasks import (
    ListTasksOption,
    StageRequest,
    TaskIndexOption,
    as_list,
    run_stage_command,
    stage_request,
)

if TYPE_CHECKING:
    from steph.config import ProjectConfig
    from steph.stages import ExtractSelection

_SCALE = "Scale and encoder"
_SELECT = "Which slides"
_RUN = "Runtime"


def extract(
    ctx: typer.Context,
    encoder: Annotated[
        str | None,
        typer.Option("--encoder", "-e", help="Encoder name (see --list-encoders).", rich_help_panel=_SCALE),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights",
            help="Local weights file of the encoder (else extract.weights.<name>).",
            rich_help_panel=_SCALE,
        ),
    ] = None,
    mpp: Annotated[
        float | None,
        typer.Option(
            "--mpp",
            help="Microns per pixel for slides whose file and manifest give none.",
            rich_help_panel=_SCALE,
        ),
    ] = None,
    cancer: Annotated[
        list[str] | None,
        typer.Option(
            "--cancer", "-c", help="Only slides of this cancer (repeatable).", rich_help_panel=_SELECT
        ),
    ] = None,
    slides: Annotated[
        list[str] | None,
        typer.Option(
            "--slides",
            metavar="IDS|FILE",
            help="Slide ids to process (repeatable or comma-separated), or a file: a manifest-format CSV to "
            "use instead of slides/manifest.csv, or a list of slide ids (one per line).",
            rich_help_panel=_SELECT,
        ),
    ] = None,
    num_shards: Annotated[
        int | None,
        typer.Option(
            "--num-shards",
            help="Split the slides into N shards (default 1; task list: slides / slurm.slides_per_task).",
            rich_help_panel=_SELECT,
        ),
    ] = None,
    shard_index: Annotated[
        int | None,
        typer.Option(
            "--shard-index",
            help="Process shard I of N, 0-based (array tasks: --task-index or SLURM_ARRAY_TASK_ID).",
            rich_help_panel=_SELECT,
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo slides whose features exist.", rich_help_panel=_RUN)
    ] = False,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.", rich_help_panel=_RUN)
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Patches per forward pass.", rich_help_panel=_RUN)
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Slide-reading threads (default: usable CPUs - 1, 2 to 16).",
            rich_help_panel=_RUN,
        ),
    ] = None,
    clear_stale_locks: Annotated[
        bool,
        typer.Option("--clear-stale-locks", help="Remove locks of dead tasks first.", rich_help_panel=_RUN),
    ] = False,
    devices: Annotated[
        str | None,
        typer.Option(
            "--devices",
            help="One worker process per device over disjoint slides, e.g. 0,1,2,3 (GPUs) or cpu,cpu.",
            rich_help_panel=_RUN,
        ),
    ] = None,
    list_tasks: ListTasksOption = False,
    task_index: TaskIndexOption = None,
    list_encoders: Annotated[
        bool, typer.Option("--list-encoders", help="List the encoders and exit.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Cut tissue patches at a fixed physical scale and encode them into features/<encoder>/<slide_id>.h5.

    Resumable (complete slides are skipped), shardable (Slurm arrays), atomic (a temporary file is renamed when complete).

    Exit code 2 when some slide failed; the reasons are also in features/<encoder>/failures.csv.

    As a Slurm array: --list-tasks prints the shards, --task-index I runs shard I (see `stephctl slurm extract`).
    """
    if list_encoders:
        _print_encoders(json_out)
        return
    run_stage_command(
        ctx,
        request(ctx, ctx.params),
        list_tasks=list_tasks,
        task_index=task_index,
        as_json=json_out,
        from_env=shard_index is None,  # in an array, $SLURM_ARRAY_TASK_ID picks the shard unless given
        clear_stale_locks=clear_stale_locks,
    )


@stage_request("extract")
def request(ctx: typer.Context, params: Mapping[str, Any]) -> StageRequest[ExtractSelection]:
    """The stage request of extract's parsed options."""
    from steph.stages import ExtractSelection

    if params.get("task_index") is not None and params.get("shard_index") is not None:
        fail(
            "--task-index and --shard-index both choose the shard", hint="use --num-shards N with one of them"
        )
    overrides: dict[str, Any] = {
        "encoder": params.get("encoder"),
        "extract.mpp": params.get("mpp"),
        "extract.device": params.get("device"),
        "extract.batch_size": params.get("batch_size"),
        "extract.workers": params.get("workers"),
    }
    weights = params.get("weights")
    devices = params.get("devices")
    with handle_errors():
        from steph.pipeline.extract_devices import parse_devices

        device_list = parse_devices(devices) if devices is not None else None
    selection = ExtractSelection(
        cancers=as_list(params.get("cancer")),
        slides_file=slides_file(ctx, params.get("slides")),
        num_shards=params.get("num_shards"),
        shard_index=params.get("shard_index"),
    )
    return StageRequest(
        "extract",
        selection,
        overrides,
        overwrite=bool(params.get("overwrite")),
        devices=tuple(device_list or ()),
        configure=None if weights is None else _with_weights(Path(weights)),
    )


def _with_weights(weights: Path) -> Any:
    """``--weights FILE``: the weights of whichever encoder the config resolves to."""

    def configure(config: ProjectConfig) -> ProjectConfig:
        from dataclasses import replace

        table = {**config.extract.weights, config.encoder: str(weights.expanduser().resolve())}
        return replace(config, extract=replace(config.extract, weights=table))

    return configure


def slides_file(ctx: typer.Context, values: list[str] | None) -> Path | None:
    """``--slides`` as the file the library reads: the FILE given, or the ids given written one
    per line to a temporary file that lives as long as the command (Slurm tasks repeat the ids).

    A single value that names an existing file, or looks like a path (a folder separator, a
    .csv/.txt/.tsv suffix; slide ids have neither), is a file; anything else is slide ids.
    """
    if values and len(values) == 1 and Path(values[0]).is_file():
        return Path(values[0])
    words = [w.strip() for value in values or () for w in value.split(",") if w.strip()]
    if not words:
        return None
    if len(words) == 1 and (
        Path(words[0]).is_file() or "/" in words[0] or Path(words[0]).suffix in (".csv", ".txt", ".tsv")
    ):
        return Path(words[0])
    files = [w for w in words if Path(w).is_file()]
    if files:
        fail(
            f"--slides mixes slide ids and the file {files[0]}",
            hint="give either slide ids (--slides A,B or --slides A --slides B) or one file",
        )
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="stephctl-slides-"))
    ctx.call_on_close(lambda: shutil.rmtree(folder, ignore_errors=True))
    listing = folder / "--slides"
    listing.write_text("".join(f"{w}\n" for w in dict.fromkeys(words)), encoding="utf-8")
    return listing


def _print_encoders(json_out: bool) -> None:
    from rich.table import Table

    from steph.extractors import list_encoders as rows_of_encoders

    with handle_errors():
        rows = rows_of_encoders()
    if json_out:
        print_json(rows)
        return
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("name", no_wrap=True)
    for column in ("dim", "precision", "default weights", "license", "from"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            *map(
                esc,
                (
                    row["name"],
                    row["embed_dim"],
                    row["precision"],
                    row["weights"],
                    row["license"],
                    row["origin"],
                ),
            )
        )
    out_console.print(table)
    out_console.print("[dim]--json adds input size, gating and a description per encoder[/]")
