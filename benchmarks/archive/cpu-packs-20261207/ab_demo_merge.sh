#!/usr/bin/env bash
# STEPH's merge stage on the demo's project, the previous tree and this one alternately, three
# rounds: bash benchmarks/archive/cpu-packs-20261207/ab_demo_merge.sh BEFORE_TREE AFTER_TREE PROJECT
# (BEFORE_TREE: a `git worktree` of the old commit; PROJECT: a copy of a finished `stephctl demo`,
# whose STEPH runs are overwritten). Each tree's code is put first on PYTHONPATH; the interpreter is
# the one on PATH (the project's virtual environment). Prints one line per run: wall, CPU, peak RSS.
set -euo pipefail
before=$1 after=$2 project=$3
cd "$project"
for round in 1 2 3; do
  for tree in "$before" "$after"; do
    /usr/bin/time -f "round $round $tree: wall %e s, cpu %U+%S s, peak rss %M KB" \
      env PYTHONPATH="$tree" python -m stephctl merge --target BRCA --method steph --overwrite >/dev/null 2>/tmp/ab_demo_merge.err \
      || { cat /tmp/ab_demo_merge.err; exit 1; }
    tail -1 /tmp/ab_demo_merge.err
  done
done
