"""`stephctl slurm`: sbatch job-array scripts for stages, chained by dependencies."""

from __future__ import annotations

import logging
from itertools import takewhile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._common import app_state, esc, fail, get_project, handle_errors, out_console, print_json
from .._tasks import plan_command

if TYPE_CHECKING:
    from steph.config import SlurmConfig
    from steph.hpc.slurm import ArrayJob


def _stage_names() -> list[str]:
    from steph.stages import stage_names

    return stage_names()


def slurm(
    ctx: typer.Context,
    words: Annotated[
        list[str],
        typer.Argument(
            metavar="STAGE... [-- STAGE OPTIONS]",
            help=f"Stages in run order ({', '.join(_stage_names())}); after `--`, options given to every stage's "
            "command (e.g. -- --target BRCA). Options for one stage only: --stage-options.",
            show_default=False,
        ),
    ],
    stage_options: Annotated[
        list[str] | None,
        typer.Option(
            "--stage-options",
            metavar="STAGE='OPTIONS'",
            help="Options for one stage's command only, split like a shell line (repeatable; e.g. "
            "--stage-options train-source='--cancer BRCA' --stage-options merge='--target BRCA'). "
            "They follow the options after `--`, which every stage gets.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the script to FILE (executable) instead of stdout."),
    ] = None,
    submit: Annotated[
        bool,
        typer.Option("--submit", help="Submit with sbatch now (chained with afterok) and print the job ids."),
    ] = False,
    after: Annotated[
        str | None, typer.Option("--after", help="Job id the first job waits for (--dependency=afterok:ID).")
    ] = None,
    pending: Annotated[
        bool, typer.Option("--pending", help="Only tasks not done yet (e.g. to resubmit what failed).")
    ] = False,
    partition: Annotated[str | None, typer.Option("--partition", help="Override slurm.partition.")] = None,
    account: Annotated[str | None, typer.Option("--account", help="Override slurm.account.")] = None,
    time: Annotated[str | None, typer.Option("--time", help="Override slurm.time (e.g. 12:00:00).")] = None,
    mem: Annotated[str | None, typer.Option("--mem", help="Override slurm.mem (e.g. 64G).")] = None,
    cpus: Annotated[int | None, typer.Option("--cpus", help="Override slurm.cpus (per task).")] = None,
    gpus: Annotated[
        int | None, typer.Option("--gpus", help="Override slurm.gpus (per task of GPU stages).")
    ] = None,
    max_parallel: Annotated[
        int | None, typer.Option("--max-parallel", help="Override slurm.max_parallel (the %K of --array).")
    ] = None,
    units_per_task: Annotated[
        int | None,
        typer.Option(
            "--units-per-task",
            min=1,
            help="Override slurm.units_per_task: units of the task list each array task runs in one "
            "process (array task I runs units I*N to I*N+N-1 with --task-index FIRST-LAST).",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the jobs (and ids with --submit) as JSON.")
    ] = False,
) -> None:
    """Write a ready sbatch array script for one stage, or a submit script chaining several.

    Task I of a stage's array runs unit I of `stephctl STAGE ... --list-tasks` (units I*N to I*N+N-1
    with --units-per-task N). Resources come from the slurm: section of stephctl.yaml and are checked
    against `sinfo` where it runs; logs go to logs/slurm/<stage>-<job>_<task>.log.
    """
    names = _stage_names()
    stages = list(takewhile(lambda word: word in names, words))
    options = list(words[len(stages) :])
    if not stages:
        fail(
            f"no stage given (got {words[0]!r})" if words else "no stage given",
            hint=f"stages: {', '.join(names)}",
        )
    if options and not options[0].startswith("-"):
        fail(f"{options[0]!r} is not a stage", hint=f"stages: {', '.join(names)}; stage options go after --")
    if len(set(stages)) != len(stages):
        fail("a stage is listed twice", hint="each stage runs once per script")
    if app_state(ctx).config is not None:  # the jobs run `stephctl -p DIR ...`, which reads DIR/stephctl.yaml
        fail(
            "stephctl slurm does not pass --config on to the jobs it writes",
            hint="put these settings in the project's stephctl.yaml (or copy the file there) and rerun without --config",
        )
    overrides: dict[str, Any] = {
        "slurm.partition": partition,
        "slurm.account": account,
        "slurm.time": time,
        "slurm.mem": mem,
        "slurm.cpus": cpus,
        "slurm.gpus": gpus,
        "slurm.max_parallel": max_parallel,
        "slurm.units_per_task": units_per_task,
    }
    from steph.hpc import slurm as scripts
    from steph.hpc.slurm import with_pins

    per_stage = _per_stage_options(stage_options or [], stages)
    listed = []
    for stage in stages:
        args = [*options, *per_stage.get(stage, [])]
        units, pins = plan_command(ctx, stage, args)
        listed.append((stage, units, with_pins(args, pins)))

    with handle_errors():
        layout, config = get_project(ctx, overrides)
        jobs = scripts.make_jobs(layout, config.slurm, listed, pending_only=pending)
        if config.slurm.check_resources:
            _check_fit(config.slurm, jobs, submit=submit)
        if submit:
            ids = scripts.submit_jobs(jobs, layout, config.slurm, after=after)
        elif len(jobs) == 1 and after is None:
            text = scripts.render_job_script(jobs[0], layout, config.slurm)
        else:
            text = scripts.render_submit_script(jobs, layout, config.slurm, after=after)
    rows = [
        {
            "stage": job.stage,
            "tasks": len(job.array_ids),
            "units": len(job.indices),
            "array": scripts.array_spec(job.array_ids, config.slurm.max_parallel),
        }
        for job in jobs
    ]
    if submit:
        for row, job_id in zip(rows, ids, strict=True):
            row["job_id"] = job_id
        if json_out:
            print_json({"jobs": rows})
        else:
            for row in rows:
                out_console.print(
                    f"{row['stage']}: job {row['job_id']} ({row['tasks']} tasks, --array={row['array']})"
                    + (f", {row['units']} units" if row["units"] != row["tasks"] else "")
                )
        return
    if output is not None:
        with handle_errors():
            scripts.write_script(output, text)
        how = f"sbatch {output}" if len(jobs) == 1 and after is None else f"bash {output}"
        if json_out:
            print_json({"script": str(output), "submit": how, "jobs": rows})
        else:
            summary = ", ".join(f"{r['stage']} {r['tasks']} tasks" for r in rows)
            out_console.print(esc(f"wrote {output} ({summary}); submit with: {how}"))
        return
    if json_out:
        print_json({"script": text, "jobs": rows})
    else:
        typer.echo(text, nl=False)


def _check_fit(config: SlurmConfig, jobs: list[ArrayJob], *, submit: bool) -> None:
    """Fail (--submit) or warn (a script) when the arrays ask for what no node of the partition has."""
    from steph.hpc.resources import read_sinfo, resource_problems

    problems = resource_problems(config, [job.gpus for job in jobs], read_sinfo(config.partition))
    if not problems:
        return
    hint = (
        "lower them with --cpus/--mem/--gpus/--time/--partition or in the slurm section of stephctl.yaml "
        "(slurm.check_resources: false skips this check)"
    )
    if submit:
        fail("the job arrays do not fit the cluster: " + "; ".join(problems), hint=hint)
    for problem in problems:
        logging.getLogger("stephctl").warning("does not fit the cluster: %s", problem)


def _per_stage_options(items: list[str], stages: list[str]) -> dict[str, list[str]]:
    """``--stage-options STAGE='OPTIONS'`` as stage -> argument list (repeats add up)."""
    import shlex

    out: dict[str, list[str]] = {}
    names = _stage_names()
    for item in items:
        stage, sep, text = item.partition("=")
        stage = stage.strip()
        if not sep or stage not in names:
            fail(
                f"--stage-options {item!r} is not STAGE='OPTIONS'",
                hint=f"e.g. --stage-options merge='--target BRCA'; stages: {', '.join(names)}",
            )
        if stage not in stages:
            fail(
                f"--stage-options names {stage}, which is not among the stages to run ({', '.join(stages)})",
                hint=f"add {stage} to the stages, or drop its --stage-options",
            )
        try:
            out.setdefault(stage, []).extend(shlex.split(text))
        except ValueError as exc:
            fail(f"--stage-options {item!r}: {exc}", hint="quote the options like a shell command line")
    return out
