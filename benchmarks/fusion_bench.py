"""Many small tensors: separate all_reduce calls against one fused call, Gloo and qccl.

    python benchmarks/fusion_bench.py                    # 1000 tensors of 4 KiB, 2 ranks
    benchmarks/netlab --ranks 2 --rate 1gbit -- python benchmarks/fusion_bench.py

Four ways to allreduce the same list, timed in alternation in one run: one
dist.all_reduce per tensor, and dist.all_reduce_coalesced over the whole list, each on a
Gloo and on a qccl group. Reports the median time of the slowest rank and the speedup
against separate Gloo calls.
"""

import argparse
import datetime
import statistics
import sys
import time

import torch
import torch.distributed as dist

from qccl.bench.launch import run_or_spawn, threads_per_rank
from qccl.bench.runner import slowest_rank


def separate(tensors, group):
    for t in tensors:
        dist.all_reduce(t, group=group)


def fused(tensors, group):
    dist.all_reduce_coalesced(tensors, group=group)


def run_rank(args):
    torch.set_num_threads(threads_per_rank())
    dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=30))
    groups = {"gloo": dist.new_group(backend="gloo"), "qccl": dist.new_group(backend="qccl")}
    ways = [(f"{name} {how.__name__}", how, group) for name, group in groups.items() for how in (separate, fused)]
    tensors = [torch.ones(args.bytes // 4) for _ in range(args.tensors)]
    samples = {label: [] for label, _, _ in ways}
    for label, how, group in ways:  # warm-up
        how(tensors, group)
    for _ in range(args.rounds):
        for label, how, group in ways:
            dist.barrier()
            start = time.perf_counter()
            how(tensors, group)
            samples[label].append(time.perf_counter() - start)
    slowest = {label: statistics.median(slowest_rank(values)) for label, values in samples.items()}
    if dist.get_rank() == 0:
        base = slowest["gloo separate"]
        print(f"# {args.tensors} float32 tensors of {args.bytes} bytes, {dist.get_world_size()} ranks, "
              f"median of {args.rounds} rounds, torch {torch.__version__}")
        print(f"{'way':>16} {'ms':>9} {'vs gloo separate':>17}")
        for label, seconds in slowest.items():
            print(f"{label:>16} {seconds * 1e3:>9.2f} {base / seconds:>17.2f}")
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2, help="local ranks to start (ignored under torchrun/netlab)")
    p.add_argument("--tensors", type=int, default=1000)
    p.add_argument("--bytes", type=int, default=4096, help="bytes per tensor")
    p.add_argument("--rounds", type=int, default=7)
    return run_or_spawn(run_rank, p.parse_args(), __file__)


if __name__ == "__main__":
    sys.exit(main())
