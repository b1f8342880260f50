"""Helpers of the cluster-scale tests: a fake ``sbatch``, stephctl subprocesses, config edits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent

FAKE_SBATCH = """#!/bin/bash
# Records its arguments and the script it reads from stdin (or the file it is given), then
# answers like sbatch. Job ids count up from 123.
log="$FAKE_SBATCH_LOG"
n=$(ls "$log" 2>/dev/null | wc -l)
id=$((123 + n))
mkdir -p "$log/$n"
if [ $# -gt 0 ]; then printf '%s\\n' "$@"; fi > "$log/$n/args"
if [ $# -gt 0 ] && [ -f "${@: -1}" ]; then cp "${@: -1}" "$log/$n/script"; else cat > "$log/$n/script"; fi
echo "Submitted batch job $id"
"""


def install_fake_sbatch(tmp: Path) -> tuple[dict[str, str], Path]:
    """A ``bin/sbatch`` that records each call under ``calls/<n>/{args,script}``; returns (env, calls)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(FAKE_SBATCH)
    sbatch.chmod(0o755)
    calls = tmp / "calls"
    calls.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FAKE_SBATCH_LOG": str(calls),
    }
    return env, calls


def recorded(calls: Path) -> list[tuple[list[str], str]]:
    """``(args, script)`` of every fake sbatch call, in order."""
    out = []
    for n in range(len(list(calls.iterdir()))):
        args = (calls / str(n) / "args").read_text().splitlines()
        out.append((args, (calls / str(n) / "script").read_text()))
    return out


def stephctl(root: Path, *args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``stephctl -p root ARGS`` as a separate process (stdout and stderr piped)."""
    environment = {**(env or os.environ), "PYTHONPATH": str(REPO)}
    environment.pop("SLURM_ARRAY_TASK_ID", None)
    return subprocess.Popen(
        [sys.executable, "-m", "stephctl", "-p", str(root), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=REPO,
    )


_TASK_LOOP = """
import sys
from stephctl.main import app
root, stage, *indices = sys.argv[1:]
worst = 0
for index in indices:  # every unit, like an array task per index; the worst exit code at the end
    code = app(["-p", root, stage, "--task-index", index, "--json"], standalone_mode=False)
    worst = max(worst, code or 0)
sys.exit(worst)
"""


def task_loop(root: Path, stage: str, indices: Sequence[int]) -> subprocess.Popen[str]:
    """One process running ``stephctl STAGE --task-index I --json`` for each ``I`` in turn (one
    import of torch for all of them, as an array task running several units would)."""
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    environment.pop("SLURM_ARRAY_TASK_ID", None)
    return subprocess.Popen(
        [sys.executable, "-c", _TASK_LOOP, str(root), stage, *map(str, indices)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=REPO,
    )


def json_documents(text: str) -> list[Any]:
    """Every JSON document printed one after the other on ``text``."""
    decoder = json.JSONDecoder()
    documents, position = [], 0
    while text[position:].strip():
        while text[position].isspace():
            position += 1
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
    return documents


def finish(processes: Sequence[subprocess.Popen[str]], timeout: float = 120) -> list[tuple[int, str, str]]:
    """Wait for every process; ``(returncode, stdout, stderr)`` each."""
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=timeout)
        results.append((process.returncode, stdout, stderr))
    return results


def set_config(root: Path, values: dict[str, Any]) -> None:
    """Write dotted ``values`` into ``root/stephctl.yaml``."""
    path = root / "stephctl.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    for dotted, value in values.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
