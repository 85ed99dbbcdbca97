#!/usr/bin/env bash
# Training across a slow, far link: DDP against LocalSGD and DiLoCo (examples/train_diloco.py),
# 2 replicas on netlab links of 100 Mbit/s with 25 ms one-way delay (needs root).
#
#   bash benchmarks/diloco_bench.sh [OUT.txt]      # about 5 minutes on a 2-core machine
#
# Every run trains the same model from the same seed on the same batches for STEPS inner
# steps (default 200) and prints its final loss, tokens/s and bytes sent per token.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/diloco_100mbit_delay25.txt}
steps=${STEPS:-200}
lab=(benchmarks/netlab --ranks 2 --rate 100mbit --delay 25 --)
run() {  # run "ENV=..." ARGS...: one configuration
  local settings=$1; shift
  env $settings "${lab[@]}" python examples/train_diloco.py --steps "$steps" "$@" 2>&1 |
    grep -E "^netlab:|final loss" | sed "s/^/[$settings $*] /"
}
{
  run "QCCL_CODEC=none" --algorithm ddp --backend gloo
  run "QCCL_CODEC=int8" --algorithm ddp
  run "QCCL_CODEC=none" --algorithm diloco --sync-every 50
  run "QCCL_CODEC=int8" --algorithm diloco --sync-every 50
  run "QCCL_CODEC=int4 QCCL_ERROR_FEEDBACK=1" --algorithm diloco --sync-every 50
  run "QCCL_CODEC=int4 QCCL_ERROR_FEEDBACK=1" --algorithm diloco --sync-every 50 --fragments 2 --sync-delay 5
  run "QCCL_CODEC=int4 QCCL_ERROR_FEEDBACK=1" --algorithm localsgd --sync-every 50
} | tee "$out"
