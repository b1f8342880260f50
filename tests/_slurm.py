"""Helpers of the tests against a real Slurm (``-m slurm``): the cluster, a tiny slide project,
submitting through ``stephctl slurm --submit`` and waiting for the jobs.

The cluster is started by ``.ci/slurm-cluster.sh`` (the same script developers run) on free
ports, in a folder of the test session, and stopped by pid at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from _hpc import REPO

SCRIPT = REPO / ".ci" / "slurm-cluster.sh"
RESOURCES = ("--time", "00:20:00", "--mem", "1500M", "--cpus", "1", "--gpus", "0")
"""What every test array asks for: fits the one-node test cluster (2 CPUs on the CI machine)."""


def _free_port_pair() -> int:
    """A port ``p`` with ``p`` and ``p + 1`` free (slurmctld and slurmd)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 65000:
            try:
                with socket.socket() as a, socket.socket() as b:
                    a.bind(("127.0.0.1", port))
                    b.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    return 16817


def _reachable(env: dict[str, str]) -> bool:
    try:
        done = subprocess.run(["sinfo", "-h"], env=env, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def start_cluster(folder: Path) -> tuple[dict[str, str], Callable[[], None]]:
    """Start a cluster in ``folder`` (or use the one ``$SLURM_CONF`` reaches); skip when impossible.

    Returns:
        The environment for client commands and jobs, and the function that stops the cluster.
    """
    if os.environ.get("SLURM_CONF") and _reachable(dict(os.environ)):
        return dict(os.environ), lambda: None
    if shutil.which("bash") is None:
        pytest.skip("no Slurm: bash is not available")
    env = {**os.environ, "STEPH_SLURM_PORT": str(_free_port_pair())}
    done = subprocess.run(
        ["bash", str(SCRIPT), "up", str(folder)], env=env, capture_output=True, text=True, timeout=180
    )
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        pytest.skip(f"no Slurm could be started ({why})")
    env["SLURM_CONF"] = done.stdout.strip().splitlines()[-1]

    def stop() -> None:
        subprocess.run(["bash", str(SCRIPT), "down", str(folder)], env=env, capture_output=True, timeout=60)

    return env, stop


def stephctl(
    root: Path, *args: object, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess:
    """``stephctl -p root ARGS`` in a separate process, run to its end."""
    environment = {**env, "PYTHONPATH": str(REPO)}
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID"):
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "stephctl", "-p", str(root), *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO,
        timeout=timeout,
    )


def submit(root: Path, *args: str, env: dict[str, str]) -> dict[str, str]:
    """``stephctl slurm ARGS --submit --json`` with :data:`RESOURCES`; stage -> job id."""
    done = stephctl(root, "slurm", *RESOURCES, "--submit", "--json", *args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return {job["stage"]: job["job_id"] for job in json.loads(done.stdout)["jobs"]}


def queued(ids: Sequence[str], env: dict[str, str]) -> list[dict[str, str]]:
    """Jobs (array tasks) of ``ids`` still in the queue: job id, state and reason each."""
    done = subprocess.run(
        ["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i|%T|%r"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    rows = [line.split("|") for line in done.stdout.splitlines() if line.strip()]
    return [{"id": r[0], "state": r[1], "reason": r[2]} for r in rows]


def wait(
    ids: Sequence[str],
    env: dict[str, str],
    *,
    timeout: float = 600,
    until: Callable[[list[dict[str, str]]], bool] | None = None,
    poll: float = 1.0,
) -> list[dict[str, str]]:
    """Wait until no job of ``ids`` is queued (or ``until(queue)`` holds); returns the queue then."""
    deadline = time.monotonic() + timeout
    while True:
        queue = queued(ids, env)
        if (until(queue) if until is not None else not queue) or time.monotonic() > deadline:
            return queue
        time.sleep(poll)


def completions(env: dict[str, str], ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """The job completion records (``jobcomp/filetxt``, what ``sacct --completion`` reads) of
    ``ids``: ``JOBID_TASK`` (array tasks) or ``JOBID`` -> every (state, exit code), in order (a
    requeued task has one record per attempt). Read from the file, because ``sacct -c`` of Slurm
    22.05 does not map array tasks."""
    conf = Path(env["SLURM_CONF"]).read_text().splitlines()
    location = next(line.split("=", 1)[1].strip() for line in conf if line.startswith("JobCompLoc="))
    records: dict[str, list[tuple[str, str]]] = {}
    path = Path(location)
    for line in path.read_text().splitlines() if path.is_file() else []:
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        array = fields.get("ArrayJobId")
        job = array or fields.get("JobId", "")
        if job not in ids:
            continue
        key = f"{array}_{fields['ArrayTaskId']}" if array else job
        records.setdefault(key, []).append((fields.get("JobState", ""), fields.get("ExitCode", "")))
    return records


def sacct_states(env: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    """``sacct -c`` (the same records, by raw job id): raw id -> every (state, exit code)."""
    done = subprocess.run(
        ["sacct", "-c", "-n", "-P", "-o", "jobidraw,state,exitcode"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    out: dict[str, list[tuple[str, str]]] = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            out.setdefault(parts[0], []).append((parts[1], parts[2]))
    return out


def slide_project(root: Path, *, patients: int = 10) -> Path:
    """A tiny slide-level project: target BRCA and one source (2 folds), tiny-cnn features."""
    from steph.config import DEFAULT_ENCODER
    from steph.synthetic import CancerSpec, CohortSpec, SlideSpec, generate_cohort
    from steph.synthetic.project import init_configured_project

    cancers = ("BRCA", "BLCA")
    init_configured_project(
        root,
        cancers=list(cancers),
        encoder=DEFAULT_ENCODER,
        overrides={
            "model.dim_emb": 16,
            "model.dim_attn": 8,
            "train.epochs": 2,
            "train.batch_size": 4,
            "train.device": "cpu",
            "extract.device": "cpu",
            "extract.workers": 0,
            "evaluate.bootstrap": 0,
            "slurm.slides_per_task": 10,
        },
        note="slurm test",
    )
    spec = CohortSpec(
        cancers=tuple(CancerSpec(name=c, n_patients=patients, censoring=0.3) for c in cancers),
        folds=2,
        second_slide_rate=0.0,
        seed=5,
        slides=SlideSpec(size_um=512.0),
    )
    assert generate_cohort(root, spec, level="slides", workers=1).ok
    return root


def outputs(root: Path) -> dict[str, bytes]:
    """Every model, task vector, merged model and prediction file (relative path -> bytes)."""
    files: dict[str, bytes] = {}
    for top, patterns in {
        "features": ("*.h5",),
        "models": ("*.safetensors", "predictions.csv"),
        "task_vectors": ("*.safetensors",),
        "merged": ("*.safetensors",),
        "results": ("predictions.csv",),
    }.items():
        for pattern in patterns:
            for path in (root / top).rglob(pattern):
                files[str(path.relative_to(root))] = path.read_bytes()
    return files
