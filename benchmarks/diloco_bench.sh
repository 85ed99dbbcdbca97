#!/usr/bin/env bash
# Training across a slow, far link: DDP against LocalSGD and DiLoCo (examples/train_diloco.py)
# and the asynchronous parameter server (examples/parameter_server.py), on netlab links of
# 100 Mbit/s with 25 ms one-way delay (needs root): 2 replicas, then 4.
#
#   bash benchmarks/diloco_bench.sh [OUT.txt]      # about 20 minutes on a 2-core machine
#
# Every run trains the same model from the same seed for STEPS inner steps per replica
# (default 200) and prints its final loss, tokens/s and bytes sent per token. The parameter
# server runs one more rank (the server) than it has workers.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/diloco_100mbit_delay25.txt}
steps=${STEPS:-200}
run() {  # run RANKS "ENV=..." SCRIPT ARGS...: one configuration
  local ranks=$1 settings=$2 script=$3; shift 3
  env $settings benchmarks/netlab --ranks "$ranks" --rate 100mbit --delay 25 -- \
    python "examples/$script" --steps "$steps" "$@" 2>&1 |
    grep -E "^netlab:|final loss" | sed "s/^/[$ranks ranks $settings $script $*] /"
}
{
  for replicas in 2 4; do
    run $replicas "QCCL_CODEC=none" train_diloco.py --algorithm ddp --backend gloo
    run $replicas "QCCL_CODEC=int8" train_diloco.py --algorithm ddp
    if [ $replicas = 2 ]; then
      run 2 "QCCL_CODEC=none" train_diloco.py --algorithm diloco --sync-every 50
      run 2 "QCCL_CODEC=int8" train_diloco.py --algorithm diloco --sync-every 50
      run 2 "QCCL_CODEC=int4 QCCL_ERROR_FEEDBACK=1" train_diloco.py --algorithm diloco --sync-every 50
    fi
    run $replicas "QCCL_CODEC=int4 QCCL_ERROR_FEEDBACK=1" train_diloco.py --algorithm diloco --sync-every 50 \
      --fragments 2 --sync-delay 5
    run $replicas "QCCL_CODEC=int4 QCCL_ERROR_FEEDBACK=1" train_diloco.py --algorithm localsgd --sync-every 50
    run $((replicas + 1)) "QCCL_P2P_CODEC=int8" parameter_server.py
    run $((replicas + 1)) "QCCL_P2P_CODEC=int8" parameter_server.py --reply-codec bf16
  done
  # Half the batch: DDP's step is then more of a link's round trips than of compute.
  run 2 "QCCL_CODEC=none" train_diloco.py --batch-size 8 --algorithm ddp --backend gloo
  run 2 "QCCL_CODEC=int8" train_diloco.py --batch-size 8 --algorithm ddp
  run 2 "QCCL_CODEC=int4 QCCL_ERROR_FEEDBACK=1" train_diloco.py --batch-size 8 --algorithm diloco --sync-every 50 \
    --fragments 2 --sync-delay 5
} | tee "$out"
