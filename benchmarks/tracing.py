"""Run a Python module or program as ``python -m MODULE`` / ``python -c CODE`` would, under cProfile,
while a thread samples every 20 ms the process's resident memory, its CPU time (all threads) and
where the main thread is:
the innermost frame of stephctl, steph or the benchmark workers on its stack, marked ``import``
when an import is running below it. Used by ``bench_train.py`` / ``bench_merge.py --profile``
to see where a whole process's time and memory go outside its arithmetic (start-up, reading,
waits on the GPU), phase by phase.

Usage: ``python -m benchmarks.tracing OUT (-m MODULE | -c CODE) [ARGS...]`` writes ``OUT.pstats``
(cProfile) and ``OUT.samples.tsv`` (seconds since start, RSS in MB, CPU seconds, where). Not a benchmark
itself; :func:`phases` turns the samples into a timeline.
"""

from __future__ import annotations

import cProfile
import itertools
import os
import runpy
import sys
import threading
import time
from pathlib import Path
from types import FrameType

PERIOD_S = 0.02
OURS = ("/steph/", "/stephctl/", "/benchmarks/realscale.py")


def _rss_mb() -> float:
    """Resident memory of this process (``/proc/self/statm``; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def where(frame: FrameType | None) -> str:
    """``file:function`` of the innermost frame of our code on the stack (``import < ...`` while
    an import runs below it; ``-`` when none of our code is on the stack)."""
    importing = False
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith("<frozen importlib"):
            importing = True
        elif any(part in name for part in OURS):
            short = name.split("/steph/")[-1] if "/steph/" in name else Path(name).name
            label = f"{short}:{frame.f_code.co_name}"
            return f"import < {label}" if importing else label
        frame = frame.f_back
    return "import" if importing else "-"


def _sample(out: Path, stop: threading.Event, main: int, start: float) -> None:
    with out.open("w") as fh:
        while not stop.is_set():
            frame = sys._current_frames().get(main)
            now, cpu = time.perf_counter() - start, time.process_time()
            fh.write(f"{now:.3f}\t{_rss_mb():.1f}\t{cpu:.3f}\t{where(frame)}\n")
            stop.wait(PERIOD_S)


def phases(samples: Path, *, min_s: float = 0.25) -> str:
    """The samples as a timeline: consecutive samples in the same place merged into one line with
    its start, seconds, CPU cores busy meanwhile (CPU seconds of all threads over wall seconds)
    and the largest RSS seen; places shorter than ``min_s`` are left out. Then the seconds and
    busy cores of each place over the whole run (the 20 longest), and the peak RSS."""
    rows = []
    for line in samples.read_text().splitlines():
        t, rss, cpu, place = line.split("\t", 3)
        rows.append((float(t), float(rss), float(cpu), place))
    if not rows:
        return "no samples\n"
    spans: list[tuple[float, float, float, float, str]] = []  # start, end, cpu0, cpu1 / rss, place
    begin = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i][3] != rows[begin][3]:
            end = rows[i] if i < len(rows) else rows[-1]
            peak = max(r[1] for r in rows[begin:i])
            spans.append((rows[begin][0], end[0], end[2] - rows[begin][2], peak, rows[begin][3]))
            begin = i
    lines = [f"{'start s':>8} {'for s':>7} {'cores':>5} {'max RSS MB':>10}  where"]
    for start, end, cpu, peak, place in spans:
        wall = end - start
        if wall >= min_s:
            lines.append(f"{start:8.2f} {wall:7.2f} {cpu / wall:5.2f} {peak:10.0f}  {place}")
    totals: dict[str, list[float]] = {}
    for (t0, _, c0, place), (t1, _, c1, _) in itertools.pairwise(rows):
        seconds_cpu = totals.setdefault(place, [0.0, 0.0])
        seconds_cpu[0] += t1 - t0
        seconds_cpu[1] += c1 - c0
    lines.append("")
    lines.append(f"{'total s':>8} {'share':>6} {'cores':>5}  where (all samples, by place)")
    span = max(rows[-1][0] - rows[0][0], 1e-9)
    for place, (seconds, cpu) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:20]:
        lines.append(f"{seconds:8.2f} {seconds / span:6.1%} {cpu / max(seconds, 1e-9):5.2f}  {place}")
    top = max(rows, key=lambda r: r[1])
    total = rows[-1][0] - rows[0][0]
    lines.append(
        f"sampled {total:.2f} s, {rows[-1][2] - rows[0][2]:.2f} CPU-s; "
        f"peak {top[1]:.0f} MB at {top[0]:.2f} s in {top[3]}"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    out, (flag, target, *args) = Path(argv[0]), argv[1:]
    if flag not in ("-m", "-c"):
        raise SystemExit(
            f"usage: python -m benchmarks.tracing OUT (-m MODULE | -c CODE) [ARGS...], not {flag}"
        )
    sys.argv = [target if flag == "-m" else "-c", *args]
    stop, start = threading.Event(), time.perf_counter()
    sampler = threading.Thread(
        target=_sample,
        args=(Path(f"{out}.samples.tsv"), stop, threading.main_thread().ident, start),
        daemon=True,
    )
    sampler.start()
    profiler = cProfile.Profile()
    code = 0
    try:
        profiler.enable()
        if flag == "-m":
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        profiler.disable()
        stop.set()
        sampler.join()
        profiler.dump_stats(f"{out}.pstats")
    sys.exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
