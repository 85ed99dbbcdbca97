#!/usr/bin/env bash
# Regenerates every measurement quoted in benchmarks/RESULTS.md into benchmarks/results/
# (tables as .txt, plus the CSV/JSON/PNG files of python -m qccl.bench). Needs root for
# the shaped-link runs (benchmarks/netlab); without root those are skipped with a message.
#
#   bash benchmarks/run_all.sh            # about 15 minutes on a 2-core machine
#
# RANKS (default 2) and RATE (default 1gbit) choose the emulated cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=${RANKS:-2} rate=${RATE:-1gbit}
out=benchmarks/results
mkdir -p "$out"

step() { echo "== $*" >&2; }

step "codec speed and error"
python benchmarks/codec_throughput.py | tee "$out/codec_throughput.txt"
python -m torch.distributed.run --nproc-per-node "$ranks" benchmarks/codec_error.py | tee "$out/codec_error.txt"

step "collectives on loopback"
python -m qccl.bench --ranks "$ranks" --out "$out/loopback" | tee "$out/loopback.txt"
step "1000 small tensors on loopback"
python benchmarks/fusion_bench.py --ranks "$ranks" | tee "$out/fusion_loopback.txt"
step "DDP training on loopback"
python benchmarks/train_bench.py --ranks "$ranks" --json "$out/train_loopback.json" | tee "$out/train_loopback.txt"
step "point to point on loopback"
p2p=(--collectives sendrecv --backends gloo,qccl:none,qccl:bf16,qccl:int8 --sizes 4K,64K,1M,16M,64M)
python -m qccl.bench --ranks "$ranks" "${p2p[@]}" --out "$out/p2p_loopback" | tee "$out/p2p_loopback.txt"
step "pipeline training on loopback"
python benchmarks/pipeline_bench.py --ranks "$ranks" --json "$out/pipeline_loopback.json" | tee "$out/pipeline_loopback.txt"

if [[ $EUID -ne 0 ]]; then
  echo "run_all: not root, skipping the shaped-link runs (benchmarks/netlab needs root)" >&2
  exit 0
fi
lab=(benchmarks/netlab --ranks "$ranks" --rate "$rate" --)
step "allreduce and sendrecv on $rate links"
"${lab[@]}" python -m qccl.bench --collectives allreduce,sendrecv --out "$out/$rate" | tee "$out/$rate.txt"
step "reduce_scatter and allgather (FSDP's collectives) on $rate links"
"${lab[@]}" python -m qccl.bench --collectives reduce_scatter,allgather --sizes 1M,16M,64M \
  --backends gloo,qccl:none,qccl:bf16,qccl:int8,qccl:int4 --out "$out/sharded_$rate" | tee "$out/sharded_$rate.txt"
step "1000 small tensors on $rate links"
"${lab[@]}" python benchmarks/fusion_bench.py | tee "$out/fusion_$rate.txt"
step "DDP training on $rate links"
"${lab[@]}" python benchmarks/train_bench.py --json "$out/train_$rate.json" | tee "$out/train_$rate.txt"
step "FSDP2 training on $rate links, without and with 20 ms RTT"
"${lab[@]}" python benchmarks/fsdp_bench.py --json "$out/fsdp_$rate.json" | tee "$out/fsdp_$rate.txt"
benchmarks/netlab --ranks "$ranks" --rate "$rate" --delay 10 -- python benchmarks/fsdp_bench.py --steps 10 \
  --configs gloo,qccl:none/none,qccl:int8/bf16,qccl:int8/int8 --json "$out/fsdp_${rate}_delay10.json" |
  tee "$out/fsdp_${rate}_delay10.txt"
step "hierarchical compression: 2 nodes x 2 ranks, $rate and 100mbit between nodes"
benchmarks/netlab --ranks 4 --ranks-per-node 2 --rate "$rate" -- python -m qccl.bench \
  --collectives allreduce,reduce_scatter --backends gloo,qccl:none,qccl:int8:flat,qccl:int8 --sizes 1M,16M,64M \
  --out "$out/hierarchical_$rate" | tee "$out/hierarchical_$rate.txt"
benchmarks/netlab --ranks 4 --ranks-per-node 2 --rate 100mbit -- python -m qccl.bench \
  --collectives allreduce,reduce_scatter --backends gloo,qccl:int8:flat,qccl:int8 --sizes 4M,16M \
  --out "$out/hierarchical_100mbit" | tee "$out/hierarchical_100mbit.txt"
step "DDP, LocalSGD and DiLoCo across 100mbit links with 25 ms delay"
bash benchmarks/diloco_bench.sh "$out/diloco_100mbit_delay25.txt"
step "point to point on $rate links"
"${lab[@]}" python -m qccl.bench "${p2p[@]}" --out "$out/p2p_$rate" | tee "$out/p2p_$rate.txt"
step "pipeline training on $rate and 100mbit links"
"${lab[@]}" python benchmarks/pipeline_bench.py --json "$out/pipeline_$rate.json" | tee "$out/pipeline_$rate.txt"
benchmarks/netlab --ranks "$ranks" --rate 100mbit -- python benchmarks/pipeline_bench.py \
  --json "$out/pipeline_100mbit.json" | tee "$out/pipeline_100mbit.txt"
