"""Start-up cost of ``stephctl --help``, with and without an installed plugin package.

Commands are mounted from entry points and import nothing heavy, so ``--help`` should cost
little more than starting Python and importing typer/rich. Measured side by side in one run
(medians of ``repeats`` fresh processes):

- ``python -c pass`` (interpreter start-up, the floor),
- ``python -m stephctl --help`` (built-in commands only),
- the same with ``examples/stephctl-plugin-example`` installed on PYTHONPATH,
- ``python -c "import torch"`` (what ``--help`` would cost at least if a command imported torch).

Python caches compiled bytecode as an installed package normally does (``PYTHONPYCACHEPREFIX``
in a temporary folder, one warm-up run per command); ``help_no_bytecode_cache_s`` is the
figure under ``PYTHONDONTWRITEBYTECODE=1`` (every module compiled at every start).

Run: ``python benchmarks/bench_cli_startup.py [--quick]`` (prints JSON). Needs ``uv`` on PATH
for the plugin figure (it installs the example package into a temporary folder).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "stephctl-plugin-example"


def _median_seconds(cmd: list[str], repeats: int, env: dict[str, str]) -> float:
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=REPO)  # warm the bytecode cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=REPO)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _install_example(target: Path) -> bool:
    uv = shutil.which("uv")
    if uv is None:
        return False
    cmd = [uv, "pip", "install", "--quiet", "--python", sys.executable, "--target", str(target), "--no-deps"]
    subprocess.run([*cmd, str(EXAMPLE)], check=True, capture_output=True)
    return True


def run(quick: bool = False) -> dict[str, object]:
    """Median wall-clock seconds of each start-up and the ratios between them."""
    repeats = 3 if quick else 10
    python = sys.executable
    help_cmd = [python, "-m", "stephctl", "--help"]
    figures: dict[str, object] = {"repeats": repeats}
    with tempfile.TemporaryDirectory() as tmp:
        base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env = {**base, "COLUMNS": "120", "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}
        figures["python_s"] = _median_seconds([python, "-c", "pass"], repeats, env)
        figures["help_s"] = _median_seconds(help_cmd, repeats, env)
        no_cache = {**base, "COLUMNS": "120", "PYTHONDONTWRITEBYTECODE": "1"}
        figures["help_no_bytecode_cache_s"] = _median_seconds(help_cmd, repeats, no_cache)
        site = Path(tmp) / "site"
        if _install_example(site):
            plugin_env = {
                **env,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")])),
            }
            figures["help_with_plugin_s"] = _median_seconds(help_cmd, repeats, plugin_env)
        figures["import_torch_s"] = _median_seconds([python, "-c", "import torch"], repeats, env)
    help_s = float(figures["help_s"])  # type: ignore[arg-type]
    figures["help_over_python"] = help_s / float(figures["python_s"])  # type: ignore[arg-type]
    figures["import_torch_over_help"] = float(figures["import_torch_s"]) / help_s  # type: ignore[arg-type]
    if "help_with_plugin_s" in figures:
        figures["plugin_over_help"] = float(figures["help_with_plugin_s"]) / help_s  # type: ignore[arg-type]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
