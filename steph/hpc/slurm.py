"""Slurm job-array scripts for the stages, and their submission chained by dependencies.

One stage becomes one job array: task ``I`` of the array runs ``stephctl ... STAGE --task-index
$SLURM_ARRAY_TASK_ID``, so the array size is the length of the stage's task list
(:mod:`steph.stages`). Resources come from ``slurm:`` in stephctl.yaml
(:class:`~steph.config.SlurmConfig`); logs go to ``logs/slurm/<stage>-%A_%a.log``.

Several stages are emitted as one bash *submit script*: each stage's job script is passed to
``sbatch`` on stdin (a quoted here-document, so nothing in it is expanded at submit time) and every
job after the first waits for the previous one with ``--dependency=afterok:<job id>``.

Every path and value written into a script goes through :func:`shlex.quote`; ``#SBATCH`` lines
use the same quoting, which sbatch's directive parser understands (it groups on ``'`` and ``"``).
The one deliberate exception is ``slurm.activate``: it is a shell line (``source .venv/bin/activate``,
``conda activate steph``) and is written as given.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..config import SlurmConfig
from ..config.slurm import check_extra
from ..errors import ConfigError, StephError
from ..fileio import write_text
from ..layout import ProjectLayout
from ..units import WorkUnit

log = logging.getLogger(__name__)

TASK_ID = '"$SLURM_ARRAY_TASK_ID"'
_JOB_IDS = re.compile(r"\d+(?::\d+)*")
_SUBMITTED = re.compile(r"(\d+)(?:;\S*)?$")


class SubmitError(StephError):
    """``sbatch`` is missing, refused a job, or printed no job id."""


@dataclass(frozen=True)
class ArrayJob:
    """One stage as a Slurm job array.

    Attributes:
        stage: Stage name (``extract``, ``train-source`` ...).
        indices: Task indices to run (all of the task list, or only the pending ones).
        args: Stage options of every task, e.g. ``("--target", "BRCA")``; ``--task-index`` is added.
        gpus: GPUs per task (0 for CPU-only stages).
        n_tasks: Length of the whole task list (for the script's comment).
        units_per_task: Units each array task runs in one process: array task ``I`` runs units
            ``I*N`` to ``I*N+N-1`` of the list (``--task-index FIRST-LAST``).
    """

    stage: str
    indices: tuple[int, ...]
    args: tuple[str, ...] = ()
    gpus: int = 0
    n_tasks: int = 0
    units_per_task: int = 1

    @property
    def array_ids(self) -> tuple[int, ...]:
        """The ``--array`` ids: the groups of :attr:`units_per_task` units holding an index.

        >>> ArrayJob("train-source", (0, 1, 2, 5, 9), units_per_task=4).array_ids
        (0, 1, 2)
        """
        return tuple(sorted({i // self.units_per_task for i in self.indices}))


def array_spec(indices: Sequence[int], max_parallel: int | None = None) -> str:
    """The value of ``--array``: sorted indices compressed into ranges, with ``%K`` when capped.

    >>> array_spec([0, 1, 2, 3], 2), array_spec([1, 3, 4, 5, 9])
    ('0-3%2', '1,3-5,9')
    """
    if not indices:
        raise ConfigError(
            "an array job needs at least one task", hint="nothing to submit: check --list-tasks"
        )
    values = sorted(set(int(i) for i in indices))
    if values[0] < 0:
        raise ConfigError(f"task indices must be >= 0, got {values[0]}")
    parts: list[str] = []
    start = prev = values[0]
    for value in [*values[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    spec = ",".join(parts)
    return f"{spec}%{max_parallel}" if max_parallel else spec


def _directive(option: str, value: object) -> str:
    text = str(value)
    if any(c in text for c in "\n\r\x00\\"):
        raise ConfigError(
            f"slurm: value {text!r} of {option} contains a newline or backslash",
            hint="sbatch cannot read such values in #SBATCH lines; fix the slurm section of stephctl.yaml",
        )
    return f"#SBATCH {option}={shlex.quote(text)}"


def launcher(config: SlurmConfig) -> list[str]:
    """How a job calls stephctl: ``stephctl`` after an activation line, else this interpreter."""
    return ["stephctl"] if config.activate.strip() else [sys.executable, "-m", "stephctl"]


def render_job_script(job: ArrayJob, layout: ProjectLayout, config: SlurmConfig) -> str:
    """The sbatch script of one stage's job array.

    Args:
        job: The stage, its task indices and options.
        layout: The project (its root goes into ``-p`` and its logs folder into ``--output``).
        config: Resources (``slurm:`` section).

    Returns:
        A complete bash script with ``#SBATCH`` directives.
    """
    log = layout.slurm_log(job.stage)
    n = job.units_per_task
    listing = " ".join(
        shlex.quote(a) for a in ["stephctl", "-p", str(layout.root), job.stage, *job.args, "--list-tasks"]
    )
    total = job.n_tasks or (max(job.indices) + 1 if job.indices else 0)
    lines = [
        "#!/bin/bash",
        f"# stephctl {__version__}: {job.stage}, {len(job.indices)} of {total} tasks"
        + (f", {n} per array task." if n > 1 else "."),
        (f"# Array task I runs units I*{n} to I*{n}+{n - 1} of: " if n > 1 else "# Task I runs unit I of: ")
        + listing,
        _directive("--job-name", f"stephctl-{job.stage}"),
        _directive("--array", array_spec(job.array_ids, config.max_parallel)),
        _directive("--output", log),
        "#SBATCH --open-mode=append",  # a requeued task appends to its log instead of truncating it
        "#SBATCH --requeue",  # a task stopped by a node failure runs again (units resume)
        _directive("--time", config.time),
        _directive("--mem", config.mem),
        _directive("--cpus-per-task", config.cpus),
    ]
    if config.partition:
        lines.append(_directive("--partition", config.partition))
    if config.account:
        lines.append(_directive("--account", config.account))
    if job.gpus > 0:
        lines.append(_directive("--gres", f"gpu:{job.gpus}"))
    for extra in config.extra:
        option, sep, value = check_extra(extra).partition("=")
        lines.append(_directive(option, value) if sep else f"#SBATCH {shlex.quote(option)}")
    lines += ["", "set -eo pipefail"]
    if config.activate.strip():
        if any(c in config.activate.strip() for c in "\n\r\x00"):
            raise ConfigError(
                "slurm.activate must be a single shell line", hint="put several commands on one line with &&"
            )
        lines.append(config.activate.strip())
    command = [*launcher(config), "-p", str(layout.root), job.stage, *job.args, "--task-index"]
    if n == 1:
        lines += [" ".join(shlex.quote(part) for part in command) + " " + TASK_ID, ""]
        return "\n".join(lines)
    lines += [
        f"first=$((SLURM_ARRAY_TASK_ID * {n}))",
        f"last=$((first + {n - 1} < {total} ? first + {n - 1} : {total - 1}))",
        " ".join(shlex.quote(part) for part in command) + ' "$first-$last"',
        "",
    ]
    return "\n".join(lines)


def render_submit_script(
    jobs: Sequence[ArrayJob], layout: ProjectLayout, config: SlurmConfig, *, after: str | None = None
) -> str:
    """A bash script submitting ``jobs`` in order, each after the previous one succeeded.

    Args:
        jobs: Stages in run order.
        layout: The project.
        config: Resources.
        after: Job id the first job waits for (``--dependency=afterok:<after>``).
    """
    chain = " -> ".join(f"{job.stage} ({len(job.indices)} tasks)" for job in jobs)
    lines = [
        "#!/bin/bash",
        f"# stephctl {__version__}: submits {chain};",
        "# each job array starts only when the previous one finished without a failed task (afterok).",
        "set -euo pipefail",
        "",
        "submit() {  # sbatch prints 'Submitted batch job <id>'; echo the id",
        "    local out",
        '    out=$(sbatch "$@")',
        "    out=${out%%;*}",
        '    echo "${out##* }"',
        "}",
        "",
    ]
    previous = _check_after(after)
    for n, job in enumerate(jobs, start=1):
        marker = f"STEPHCTL_JOB_{n}"
        dependency = f' --dependency="afterok:{previous}"' if previous else ""
        lines.append(f"JOB_{n}=$(submit{dependency} <<'{marker}'")
        lines.append(render_job_script(job, layout, config).rstrip("\n"))
        lines.append(marker)
        lines.append(")")
        lines.append(f'echo "{job.stage}: job $JOB_{n}"')
        lines.append("")
        previous = f"$JOB_{n}"
    return "\n".join(lines)


def _check_after(after: str | None) -> str | None:
    """``--after``: a job id, or several joined by ``:`` (``afterok:1:2`` waits for both)."""
    if after is not None and not _JOB_IDS.fullmatch(after):
        raise ConfigError(f"--after expects a Slurm job id (or ids joined by ':'), got {after!r}")
    return after


def submit_jobs(
    jobs: Sequence[ArrayJob],
    layout: ProjectLayout,
    config: SlurmConfig,
    *,
    after: str | None = None,
    sbatch: str = "sbatch",
    scancel: str = "scancel",
) -> list[str]:
    """Submit ``jobs`` with ``sbatch`` in order, chained with ``--dependency=afterok``.

    Each submitted script is also saved as ``logs/slurm/<stage>-<time>.sbatch``. When sbatch
    refuses a job after earlier ones were accepted, those are cancelled with ``scancel`` (they
    would run with nothing after them); the error names them, and the command to cancel them
    when scancel failed.

    Returns:
        The job ids, one per job.

    Raises:
        SubmitError: sbatch is not on PATH, exits non-zero or prints no job id.
    """
    ids: list[str] = []
    previous = _check_after(after)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for job in jobs:
        script = render_job_script(job, layout, config)
        write_text(layout.slurm_script(job.stage, stamp), script)
        command = [sbatch, *([f"--dependency=afterok:{previous}"] if previous else [])]
        try:
            done = subprocess.run(command, input=script, text=True, capture_output=True, check=False)
        except FileNotFoundError as exc:
            raise SubmitError(
                f"{sbatch!r} not found: this machine cannot submit Slurm jobs",
                hint="run on a Slurm login node, or write the script with -o FILE and submit it there",
            ) from exc
        lines = done.stdout.strip().splitlines()
        match = _SUBMITTED.search(lines[-1].strip()) if done.returncode == 0 and lines else None
        if match is None:
            refused = f"sbatch refused the {job.stage} job (exit {done.returncode}): {(done.stderr or done.stdout).strip()}"
            raise _chain_broken(refused, jobs, ids, scancel=scancel)
        previous = match.group(1)
        ids.append(previous)
    return ids


def _chain_broken(refused: str, jobs: Sequence[ArrayJob], ids: Sequence[str], *, scancel: str) -> SubmitError:
    """The error of a chain that sbatch broke part-way: the jobs already submitted are cancelled
    (they would run without their dependants), and named, with the command if that failed."""
    hint = "check the slurm section of stephctl.yaml (partition, account, time, mem, gpus)"
    if not ids:
        return SubmitError(refused, hint=hint)
    submitted = ", ".join(f"{job.stage} {job_id}" for job, job_id in zip(jobs, ids, strict=False))
    try:
        cancelled = subprocess.run([scancel, *ids], capture_output=True, text=True, check=False)
        ok, why = cancelled.returncode == 0, (cancelled.stderr or cancelled.stdout).strip()
    except OSError as exc:
        ok, why = False, str(exc)
    if ok:
        log.warning("cancelled the jobs submitted before the refusal: %s", submitted)
        return SubmitError(f"{refused}; the jobs submitted before it were cancelled ({submitted})", hint=hint)
    return SubmitError(
        f"{refused}; the jobs submitted before it are still queued ({submitted}) and could not be "
        f"cancelled: {why}",
        hint=f"cancel them with `scancel {' '.join(ids)}`, then {hint}",
    )


def make_jobs(
    layout: ProjectLayout,
    config: SlurmConfig,
    stages: Sequence[tuple[str, Sequence[WorkUnit], Sequence[str]]],
    *,
    pending_only: bool = False,
    units_per_task: int | None = None,
) -> list[ArrayJob]:
    """One :class:`ArrayJob` per stage from its task list.

    Args:
        layout: The project.
        config: Resources; ``gpus`` applies to stages that use a GPU (a ``--devices`` option among
            the stage options asks for one GPU per listed GPU device instead).
        stages: ``(stage, units, options)`` in run order; ``options`` are the stage options of
            every task (the pass-through options plus the task list's pins).
        pending_only: Only the units not done yet (their indices in the full list are kept);
            a stage whose options ask for ``--overwrite`` keeps all its units (they are redone).
        units_per_task: Units per array task (default ``config.units_per_task``).

    Creates ``logs/slurm/``: Slurm does not create the folder of ``--output`` and a job whose log
    cannot be opened fails without a trace.

    Raises:
        ConfigError: a stage has no tasks, or nothing at all is pending.
    """
    from ..stages import get_stage

    jobs = []
    for stage, units, options in stages:
        if any("\n" in option or "\r" in option for option in options):
            raise ConfigError(
                f"{stage}: a stage option contains a line break", hint="pass each option on one line"
            )
        redo = "--overwrite" in options  # every unit runs again: --pending must not drop any
        indices = [i for i, unit in enumerate(units) if redo or not (pending_only and unit.done)]
        if not units:
            raise ConfigError(
                f"{stage}: the task list is empty", hint=f"check `stephctl {stage} --list-tasks`"
            )
        if not indices:
            continue
        gpus = _devices_gpus(options) if "--devices" in " ".join(options) else config.gpus
        jobs.append(
            ArrayJob(
                stage=stage,
                indices=tuple(indices),
                args=tuple(options),
                gpus=gpus if get_stage(stage).gpus else 0,
                n_tasks=len(units),
                units_per_task=units_per_task or config.units_per_task,
            )
        )
    if not jobs:
        raise ConfigError(
            "nothing to submit: every task is done", hint="drop --pending to resubmit everything"
        )
    layout.slurm_log(jobs[0].stage).parent.mkdir(parents=True, exist_ok=True)  # sbatch does not create it
    return jobs


def with_pins(options: Sequence[str], pins: Sequence[str]) -> list[str]:
    """``options`` plus the ``(--name, value)`` pairs of ``pins`` whose option is not given already.

    >>> with_pins(["--num-shards", "4"], ["--num-shards", "7"]), with_pins(["--cancer", "BRCA"], ["--num-shards", "7"])
    (['--num-shards', '4'], ['--cancer', 'BRCA', '--num-shards', '7'])
    """
    given = {option.split("=", 1)[0] for option in options}
    pairs = zip(pins[::2], pins[1::2], strict=True)
    return [*options, *(part for name, value in pairs if name not in given for part in (name, value))]


def _devices_gpus(options: Sequence[str]) -> int:
    """GPUs named by a ``--devices`` option (``cpu`` entries do not count)."""
    from ..pipeline.extract_devices import parse_devices

    for n, option in enumerate(options):
        if option == "--devices" and n + 1 < len(options):
            value = options[n + 1]
        elif option.startswith("--devices="):
            value = option.split("=", 1)[1]
        else:
            continue
        return sum(1 for device in parse_devices(value) if device != "cpu")
    return 0


def write_script(path: Path, text: str) -> Path:
    """Write a generated script atomically and make it executable."""
    write_text(path, text)
    path.chmod(path.stat().st_mode | 0o111)
    return path
