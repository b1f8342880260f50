"""Start-up cost of ``stephctl --help``, with and without an installed plugin package.

Commands are mounted from entry points and import nothing heavy, so ``--help`` should cost
little more than starting Python and importing typer/rich. Measured side by side in one run
(medians of ``repeats`` fresh processes, wall-clock and CPU time; CPU time is the robust
figure on shared cores):

- ``python -c pass`` (interpreter start-up, the floor),
- ``python -m stephctl --help`` (built-in commands only),
- the same with ``examples/stephctl-plugin-example`` installed on PYTHONPATH,
- ``python -c "import torch"`` (what ``--help`` would cost at least if a command imported torch).

Python caches compiled bytecode as an installed package normally does (``PYTHONPYCACHEPREFIX``
in a temporary folder, one warm-up run per command); ``help_no_bytecode_cache_s`` is the
figure under ``PYTHONDONTWRITEBYTECODE=1`` (every module compiled at every start).

Run: ``python -m benchmarks.bench_cli_startup [--quick]`` (prints JSON). Needs ``uv`` on PATH
for the plugin figure (it installs the example package into a temporary folder).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "stephctl-plugin-example"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _median_seconds(cmd: list[str], repeats: int, env: dict[str, str]) -> tuple[float, float]:
    """Median wall-clock and median CPU (user + system) seconds of ``cmd`` in fresh processes."""
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=REPO)  # warm the bytecode cache
    wall, cpu = [], []
    for _ in range(repeats):
        cpu_start, start = _children_cpu(), time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=REPO)
        wall.append(time.perf_counter() - start)
        cpu.append(_children_cpu() - cpu_start)
    return statistics.median(wall), statistics.median(cpu)


def _install_example(target: Path) -> bool:
    uv = shutil.which("uv")
    if uv is None:
        return False
    cmd = [uv, "pip", "install", "--quiet", "--python", sys.executable, "--target", str(target), "--no-deps"]
    subprocess.run([*cmd, str(EXAMPLE)], check=True, capture_output=True)
    return True


def run(quick: bool = False) -> dict[str, object]:
    """Median wall-clock and CPU seconds of each start-up, and the ratios between them."""
    repeats = 3 if quick else 10
    python = sys.executable
    help_cmd = [python, "-m", "stephctl", "--help"]
    measured: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env = {**base, "COLUMNS": "120", "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}
        measured["python"] = _median_seconds([python, "-c", "pass"], repeats, env)
        measured["help"] = _median_seconds(help_cmd, repeats, env)
        no_cache = {**base, "COLUMNS": "120", "PYTHONDONTWRITEBYTECODE": "1"}
        measured["help_no_bytecode_cache"] = _median_seconds(help_cmd, repeats, no_cache)
        site = Path(tmp) / "site"
        if _install_example(site):
            plugin_env = {
                **env,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")])),
            }
            measured["help_with_plugin"] = _median_seconds(help_cmd, repeats, plugin_env)
        measured["import_torch"] = _median_seconds([python, "-c", "import torch"], repeats, env)
    figures: dict[str, object] = {"repeats": repeats}
    for name, (wall, cpu) in measured.items():
        figures[f"{name}_s"] = round(wall, 3)
        figures[f"{name}_cpu_s"] = round(cpu, 3)
    help_cpu = measured["help"][1]
    figures["import_torch_over_help_cpu"] = round(measured["import_torch"][1] / help_cpu, 2)
    if "help_with_plugin" in measured:
        figures["plugin_over_help_cpu"] = round(measured["help_with_plugin"][1] / help_cpu, 2)
    return figures


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
