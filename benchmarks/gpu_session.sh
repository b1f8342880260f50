#!/usr/bin/env bash
# One lent GPU session (the `device` tool), run as one script within its 10-minute limit:
#   - the transfer benchmark's remaining draws on the host CPU cores (niced, CUDA hidden),
#   - bench_precision (fp32 vs bf16 on the demo cohort, on the GPU),
#   - bench_train and bench_merge on the GPU (heavy-tailed bags, D = 1536).
# Every part is time-boxed so the results are always packed into $OUT/results.tar.gz.
#
# Usage (from the repository root, wheels of stephctl and openslide in .whl/):
#   bash benchmarks/gpu_session.sh "0.5:1 0.5:2 1:1 1:2"
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
RES=/tmp/gpu-session/res  # outside $OUT: only the packed file comes back
mkdir -p "$RES"
DRAWS=${1:-}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=$PWD:/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c 'import torch, sys; print(sys.version, torch.__version__, torch.cuda.get_device_name())'; nproc; } > "$RES/machine.txt" 2>&1

# 1. transfer draws on the CPU (one process each, 3 threads), in the background
pids=()
for draw in $DRAWS; do
    sharing=${draw%%:*}; seed=${draw##*:}
    mkdir -p "$RES/transfer-$sharing-$seed"
    CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=3 MKL_NUM_THREADS=3 nice -n 10 \
        timeout 540 python3 benchmarks/transfer.py --sharing "$sharing" --seeds "$seed" \
        --out-dir "$RES/transfer-$sharing-$seed" > "$RES/transfer-$sharing-$seed/log.txt" 2>&1 &
    pids+=($!)
done

# 2. the GPU figures, one after another
timeout 150 python3 benchmarks/bench_precision.py --device cuda --precisions fp32 bf16 \
    --out "$RES/precision.json" > "$RES/precision.log" 2>&1
echo "precision rc=$?" >> "$RES/status.txt"
timeout 210 python3 benchmarks/bench_train.py --device cuda --no-equal > "$RES/train_gpu.json" 2> "$RES/train_gpu.log"
echo "train rc=$?" >> "$RES/status.txt"
timeout 160 python3 benchmarks/bench_merge.py --device cuda --no-equal > "$RES/merge_gpu.json" 2> "$RES/merge_gpu.log"
echo "merge rc=$?" >> "$RES/status.txt"

for pid in "${pids[@]}"; do wait "$pid"; echo "transfer pid $pid rc=$?" >> "$RES/status.txt"; done
tar -czf "$OUT/results.tar.gz" -C "$(dirname "$RES")" res
cat "$RES/status.txt"
