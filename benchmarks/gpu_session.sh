#!/usr/bin/env bash
# One lent GPU session (the `device` tool), run as one script within its 10-minute limit. In
# order of importance, each part time-boxed; after each part every result so far is packed into
# $OUT/results.tar.gz (the device tool returns only a few files, and whatever is in $OUT when a
# command is cut off). PARTS (default: all, in this order) picks parts by name:
#   tests      the CUDA tests (tests/training/test_training_cuda.py, the chunk-equality and precision tests,
#              the stacked folds against each fold alone: tests/training/test_stacked.py),
#   host       bench_host on the card: wall and host CPU time per bag of tiny-model training steps
#              (D = 16) for the four models at 16 and 64 bags, and of 1, 2 and 5 stacked folds of
#              STEPH, ROUPKT and AdaMerging, CUDA's operator counts (host.json; the protocol part
#              prices the host's time per step with it),
#   train      bench_train at 20 epochs (48 heavy-tailed bags, D = 1536: stage, one-bag loop, bare
#              compute, the card's measured fp32/bf16 peaks and the fractions of them), then one
#              cProfile run of the stage and of the one-bag loop (profile-train/),
#   merge      bench_merge at 20 epochs, STEPH as above, plus one stage process each of ROUPKT and
#              AdaMerging with their analytic FLOPs and achieved rate (--methods), profile-merge/,
#   extract    bench_extract with UNI2-h's architecture (ViT-g/14, random weights, bf16): one slide
#              of 16,384 px through extraction against the encoder alone, and its TFLOP/s,
#   protocol   protocol_check: a BRCA-sized target (1,000 patients) and 12 sources of 40, generated
#              here; train-source, task-vector and merge --paper as one process each, priced
#              by the cost model with train's and merge's measured rate (needs several minutes:
#              run it as its own command, PARTS=protocol, after a command that ran train and merge),
#   precision  bench_precision: fp32 against bf16 on the full demo cohort (from a prepared project
#              when .whl/demo-prepared.tgz exists: generating and extracting it takes about 2 minutes),
#   train_old, merge_old  bench_train and bench_merge for the baseline commit packed in
#              .whl/old.tar, side by side in the same session (skipped without it),
#   merge_det  bench_merge with the one-bag loop and bare compute in deterministic mode, as the
#              stage runs (STEPH_BENCH_DETERMINISTIC=1: what determinism costs),
#   huge       the 100,000-patch bag (bench_train --only huge).
# No other work runs on the host meanwhile, so the host side (start-up, reading) is not slowed.
#
# Prepare (here, on the development machine; .whl/ is git-ignored and carried with carry=[".whl"]):
#   uv build --wheel --out-dir .whl
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux1_x86_64 -d .whl \
#       openslide-bin==4.0.1.2 openslide-python==1.4.7
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl/pytest \
#       pytest pluggy iniconfig packaging
#   git archive BASELINE_REV -o .whl/old.tar
#   python -m benchmarks.bench_precision --device cpu --precisions fp32 --work W  # ~3 min
#   tar --exclude=demo/slides -czf .whl/demo-prepared.tgz -C W demo               # ~11 MB
# Run (device tool): BUDGET_S=540 bash benchmarks/gpu_session.sh   (timeout_s 570)
#   then, the machine still warm: PARTS=protocol BUDGET_S=540 bash benchmarks/gpu_session.sh
# Dry run here: PATH=.venv/bin:$PATH PIP="uv pip" BENCH_DEVICE=cpu QUICK=1 EPOCHS=2 bash benchmarks/gpu_session.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
RES=/tmp/gpu-session/res
PARTS=${PARTS:-"tests host train merge extract protocol precision train_old merge_old merge_det huge"}
DEVICE=${BENCH_DEVICE:-cuda}
QUICK=${QUICK:+--quick}
EPOCHS=${EPOCHS:-20}  # the protocol length; a CPU dry run: EPOCHS=2
BUDGET_S=${BUDGET_S:-560}
NEW=$PWD
OLD=/tmp/gpu-session/old
# a later command keeps the earlier one's results (protocol prices with train's and merge's)
rm -rf /tmp/gpu-session/precision /tmp/gpu-session/protocol && mkdir -p "$OUT" "$OLD" "$RES"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
SITE=/tmp/gpu-session/site
PIP=${PIP:-python3 -m pip}  # PIP="uv pip" where python3 has no pip (a uv venv)
$PIP install -q --no-index --no-deps --upgrade --target "$SITE" .whl/*.whl || exit 3
python3 -c 'import pytest' 2>/dev/null || $PIP install -q --no-index --no-deps --target "$SITE" .whl/pytest/*.whl
[ -f .whl/old.tar ] && tar -xf .whl/old.tar -C "$OLD"
PREPARED=()
if [ -f .whl/demo-prepared.tgz ] && [ -z "$QUICK" ]; then
    mkdir -p /tmp/gpu-session/prep && tar -xzf .whl/demo-prepared.tgz -C /tmp/gpu-session/prep
    PREPARED=(--prepared /tmp/gpu-session/prep/demo)
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
  PYTHONPATH=$SITE python3 -c 'import torch, sys; print(sys.version, torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())'; \
  nproc; uptime; } > "$RES/machine.txt" 2>&1

# part NAME LIMIT_S TREE CMD...: run CMD in TREE (its own steph first on the path), time-boxed.
part() {
    local name=$1 limit=$2 tree=$3 start=$SECONDS
    shift 3
    [[ " $PARTS " == *" $name "* ]] || return 0
    local left=$((BUDGET_S - SECONDS))
    if ((left < 20)) || [ ! -d "$tree/steph" ]; then
        echo "$name skipped (${left}s left)" >> "$RES/status.txt"
        return
    fi
    ((limit > left)) && limit=$left
    (cd "$tree" && PYTHONPATH=$tree:$SITE timeout "$limit" "$@") > "$RES/$name.out" 2> "$RES/$name.log"
    echo "$name rc=$? $((SECONDS - start))s (limit ${limit}s)" >> "$RES/status.txt"
    tar -czf "$OUT/results.tar.gz" -C "$RES" .
}

part tests 100 "$NEW" python3 -m pytest -q -p no:cacheprovider \
    tests/training/test_training_cuda.py tests/training/test_training_chunks.py tests/training/test_training_precision.py \
    tests/training/test_stacked.py
part host 60 "$NEW" python3 -m benchmarks.bench_host --device "$DEVICE" --steps 50 --out "$RES/host.json"
part train 150 "$NEW" python3 -m benchmarks.bench_train --device "$DEVICE" --no-equal --only rows --epochs "$EPOCHS" \
    --profile "$RES/profile-train" $QUICK
part merge 190 "$NEW" python3 -m benchmarks.bench_merge --device "$DEVICE" --no-equal --epochs "$EPOCHS" \
    --methods roupkt adamerging --profile "$RES/profile-merge" $QUICK
EXTRACT=(--encoder uni2-h --device "$DEVICE" --batch-size 64 --slide-px 16384)
[ -n "$QUICK" ] && EXTRACT=(--encoder timm:resnet18 --device "$DEVICE" --batch-size 32 --quick)
part extract 120 "$NEW" python3 -m benchmarks.bench_extract "${EXTRACT[@]}"
PRICES=()
[ -s "$RES/train.out" ] && [ -s "$RES/merge.out" ] && PRICES=("$RES/train.out" "$RES/merge.out")
[ -s "$RES/host.json" ] && PRICES+=(--host-json "$RES/host.json")
part protocol 540 "$NEW" python3 -m benchmarks.protocol_check "${PRICES[@]}" --device "$DEVICE" \
    --patients 1000 --source-patients 40 --work /tmp/gpu-session/protocol --out "$RES/protocol.json" $QUICK
part precision 210 "$NEW" python3 -m benchmarks.bench_precision --device "$DEVICE" --precisions fp32 bf16 \
    --work /tmp/gpu-session/precision --out "$RES/precision.json" "${PREPARED[@]}" $QUICK
part train_old 90 "$OLD" python3 -m benchmarks.bench_train --device "$DEVICE" --no-equal --only rows $QUICK
part merge_old 100 "$OLD" python3 -m benchmarks.bench_merge --device "$DEVICE" --no-equal $QUICK
part merge_det 100 "$NEW" env STEPH_BENCH_DETERMINISTIC=1 \
    python3 -m benchmarks.bench_merge --device "$DEVICE" --no-equal $QUICK
part huge 70 "$NEW" python3 -m benchmarks.bench_train --device "$DEVICE" --only huge $QUICK
uptime >> "$RES/machine.txt"
tar -czf "$OUT/results.tar.gz" -C "$RES" .
cat "$RES/status.txt"
