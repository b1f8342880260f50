"""Features read once: bytes a whole ``stephctl merge --paper`` process reads, over the target's features.

Generates a small project shaped like the real-scale benchmarks (target BRCA and two sources,
heavy-tailed bags; ``--quick``: D = 384), trains the sources and the target on every fold
(1 epoch: the arithmetic is not what is measured here), makes the task vectors, then runs, each as
one process:

- ``merge --paper``: the target's whole comparison (16 rows x 5 folds) in one process;
- ``merge --method steph --fold 0``: one unit, what a Slurm array task of one unit reads;
- ``merge --list-methods``: the same start-up and imports, no features (the baseline).

Each process's bytes read through ``read``/``pread`` system calls come from ``/proc/self/io``
(``rchar``) at its exit, minus the baseline's; divided by the bytes of the target's feature files,
they give the passes over the features. Target: one pass for the whole comparison (the bags stay
cached for every row and fold), not one per unit.

    python -m benchmarks.bench_reads [--quick] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import realscale as rs

PROBE = (
    "import atexit, sys\n"
    "def report():\n"
    "    io = dict(line.split(': ') for line in open('/proc/self/io').read().splitlines())\n"
    "    sys.stderr.write('STEPH_IO ' + io['rchar'] + '\\n')\n"
    "atexit.register(report)\n"
    "from stephctl.main import main\n"
    "sys.argv = ['stephctl', *sys.argv[1:]]\n"
    "main()\n"
)
"""Runs stephctl in this process and writes its ``rchar`` at exit (after every read)."""


def read_bytes(root: Path, *args: str) -> int:
    """Bytes read by one ``stephctl -p ROOT ARGS`` process (``rchar`` at its exit)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "-p", str(root), *args],
        capture_output=True,
        text=True,
        env=rs.ENV,
        check=False,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("STEPH_IO ")]
    if not lines or done.returncode not in (0, 2):
        raise RuntimeError(f"stephctl {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return int(lines[-1].split()[1])


def run(quick: bool = False, *, epochs: int = 1, work: Path | None = None) -> dict[str, Any]:
    cohort = rs.Cohort(patients=48, source_patients=24, dim=384 if quick else 1536)
    if quick:
        cohort = rs.Cohort(**{**cohort.__dict__, "median": 600.0, "clip": (60, 4000)})
    with tempfile.TemporaryDirectory(prefix="bench-reads-") as tmp:
        root = (work or Path(tmp)) / "project"
        shape = rs.make_project(root, cohort, sources=True)
        rs.warm_bytecode()
        for cmd in (
            ["train-source", "--epochs", str(epochs)],
            ["task-vector"],
        ):
            subprocess.run(rs.stephctl(root, *cmd), check=True, env=rs.ENV, capture_output=True)
        target_bytes = sum(p.stat().st_size for p in rs.target_feature_files(root))
        baseline = read_bytes(root, "merge", "--list-methods")
        unit = read_bytes(
            root,
            "merge",
            "--target",
            rs.TARGET,
            "--method",
            "steph",
            "--top-k",
            "2",
            "--fold",
            "0",
            "--epochs",
            str(epochs),
        )  # first: the paper's run below makes this unit (it would then be skipped)
        paper = read_bytes(
            root,
            "merge",
            "--target",
            rs.TARGET,
            "--paper",
            "--top-k",
            "2",
            "--epochs",
            str(epochs),
            "--overwrite",
        )
    return {
        "cohort": shape,
        "target_feature_mb": round(target_bytes / 1e6, 1),
        "baseline_mb": round(baseline / 1e6, 1),
        "paper_process_mb": round(paper / 1e6, 1),
        "one_unit_process_mb": round(unit / 1e6, 1),
        "paper_passes_over_target_features": round((paper - baseline) / target_bytes, 2),
        "one_unit_passes_over_target_features": round((unit - baseline) / target_bytes, 2),
        "targets_met": {
            "paper_reads_the_target_once (<= 1.2 passes)": (paper - baseline) / target_bytes <= 1.2
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="D = 384, median 600")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--work", type=Path, help="make the project in this folder and keep it")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, epochs=args.epochs, work=args.work), indent=2))


if __name__ == "__main__":
    main()
