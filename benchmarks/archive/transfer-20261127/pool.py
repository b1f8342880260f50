"""Pool the issue-17 transfer draws in this folder into one table (docs/benchmarks.md, "Transfer
benchmark").

Per-fold values come from the results files that have them: the ``.draws.jsonl`` of the first
run (one finished draw a line) and the ``transfer-20261127-*.json`` of the second. The seed-0 draws at sharing 0.5 and 1 kept
only their markdown, so they enter through their mean, sd and paired figures (5 folds each). The
pooled mean is exact; the pooled sd is exact up to the markdown's rounding:
``SS = sum_i [(n_i - 1) sd_i^2 + n_i (m_i - M)^2]``, ``sd = sqrt(SS / (N - 1))``.

    python benchmarks/archive/transfer-20261127/pool.py > benchmarks/archive/transfer-20261127/transfer-pooled-20261127.md
"""

import glob
import json
import math
import re
import statistics
from pathlib import Path

RES = Path(__file__).resolve().parent
groups = {}  # sharing -> label -> list of (n, mean, sd, diff_mean, wins)
oracle = {}
seeds = {}


def add(sh, label, n, m, sd, dm, w):
    groups.setdefault(sh, {}).setdefault(label, []).append((n, m, sd, dm, w))


def table_rows(text):
    """``(label, cells)`` of each row of the markdown tables in ``text`` (header and rule skipped)."""
    for line in text.splitlines():
        m = re.match(r"\| (.+?) \| (.+) \|$", line)
        if m and m.group(1) != "method" and not m.group(1).startswith("-"):
            yield m.group(1), [c.strip() for c in m.group(2).split("|")]


def from_values(sh, seed, rec):
    seeds.setdefault(sh, []).append(seed)
    base = rec["methods"]["cancer-specific"]["values"]
    for label, e in rec["methods"].items():
        v = e["values"]
        d = [a - b for a, b in zip(v, base, strict=False)]
        add(
            sh,
            label,
            len(v),
            statistics.fmean(v),
            statistics.stdev(v),
            statistics.fmean(d),
            sum(x > 0 for x in d),
        )
    o = rec["oracle"]["values"]
    oracle.setdefault(sh, []).append((len(o), statistics.fmean(o), statistics.stdev(o)))


for line in (RES / "transfer-20261126-233721.draws.jsonl").read_text().splitlines():
    if line.strip():
        r = json.loads(line)
        from_values(float(r["sharing"]), r["seed"], r)
for f in sorted(glob.glob(str(RES / "transfer-20261127-*.json"))):
    doc = json.loads(Path(f).read_text())
    for r in doc["results"]:
        for seed, run in zip(r["seeds"], r["runs"], strict=False):
            from_values(float(r["sharing"]), seed, run)
# seed 0 at sharing 0.5 and 1 from the markdown
md = (RES / "transfer-20261126-235223.md").read_text().split("Paired difference")
cols = [0.5, 1.0]
for label, cells in table_rows(md[0]):
    for sh, c in zip(cols, cells, strict=False):
        mm = re.match(r"([0-9.]+) \(([0-9.]+)\)", c)
        if not mm:
            continue
        if label == "*oracle (true risk)*":
            oracle.setdefault(sh, []).append((5, float(mm.group(1)), float(mm.group(2))))
        else:
            groups.setdefault(sh, {}).setdefault(label, []).append(
                [5, float(mm.group(1)), float(mm.group(2)), 0.0, 0]
            )
for sh in cols:
    seeds.setdefault(sh, []).append("0 (earlier)")
for label, cells in table_rows(md[1]):
    for sh, c in zip(cols, cells, strict=False):
        mm = re.match(r"([+-][0-9.]+) \((\d+)/5\)", c)
        if not mm:
            continue
        g = groups[sh][label][-1]
        g[3] = float(mm.group(1))
        g[4] = int(mm.group(2))


def pool(items):
    N = sum(i[0] for i in items)
    M = sum(i[0] * i[1] for i in items) / N
    ss = sum((i[0] - 1) * i[2] ** 2 + i[0] * (i[1] - M) ** 2 for i in items)
    return N, M, math.sqrt(ss / (N - 1))


shs = sorted(groups)
labels = list(groups[0.0])
out = [
    "Draws: "
    + "; ".join(f"sharing {s:g}: seeds {', '.join(map(str, sorted(seeds[s], key=str)))}" for s in shs),
    "",
    "Mean (sd) test C-index over 5 target folds x 3 cohort draws (15 test folds per column).",
    "",
    "| method | " + " | ".join(f"sharing {s:g}" for s in shs) + " |",
    "|---|" + "---:|" * len(shs),
]
for label in labels:
    cells = []
    for s in shs:
        N, M, SD = pool(groups[s][label])
        cells.append(f"{M:.4f} ({SD:.3f})")
    out.append(f"| {label} | " + " | ".join(cells) + " |")
out.append(
    "| *oracle (true risk)* | " + " | ".join("{1:.4f} ({2:.3f})".format(*pool(oracle[s])) for s in shs) + " |"
)
out += [
    "",
    "Paired difference to cancer-specific over the same folds: mean (folds won).",
    "",
    "| method | " + " | ".join(f"sharing {s:g}" for s in shs) + " |",
    "|---|" + "---:|" * len(shs),
]
for label in labels[1:]:
    cells = []
    for s in shs:
        it = groups[s][label]
        N = sum(i[0] for i in it)
        cells.append(f"{sum(i[0] * i[3] for i in it) / N:+.4f} ({sum(i[4] for i in it)}/{N})")
    out.append(f"| {label} | " + " | ".join(cells) + " |")
print("\n".join(out))
