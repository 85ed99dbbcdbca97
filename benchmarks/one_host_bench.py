"""Per-call time on one host: qccl through shared memory against Gloo (and qccl over its
sockets, force_network), side by side in one run.

    torchrun --nproc-per-node 2 benchmarks/one_host_bench.py [--repeats 5] [--json out.json]
    torchrun --nproc-per-node 4 benchmarks/one_host_bench.py

Each row is a loop of back-to-back synchronous calls (issue 28's table): all_reduce of
64 B, 4 KiB, 256 KiB, 4 MiB and 64 MiB of float32; broadcast, all_gather_into_tensor and
reduce_scatter_tensor of 4 KiB per rank; barrier; and a 1 KiB send/recv ping-pong between
ranks 0 and 1 (one round trip per iteration). Every backend has its own group over the
same ranks; each repeat runs every backend in turn, so the machine's noise hits them
alike. Rank 0 prints the median over repeats of the mean time per call, and Gloo's time
divided by qccl's (> 1: qccl is faster). benchmarks/one_host_mpi.py measures the same rows
with Open MPI's shared memory, the floor.
"""

import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist

import qccl

KIB, MIB = 1 << 10, 1 << 20


def all_reduce(nbytes):
    def make(group):
        t = torch.ones(nbytes // 4)
        return lambda: dist.all_reduce(t, group=group)
    return make


def broadcast(group):
    t = torch.ones(4 * KIB // 4)
    return lambda: dist.broadcast(t, src=0, group=group)


def all_gather(group):
    t = torch.ones(4 * KIB // 4)
    out = torch.empty(t.numel() * dist.get_world_size(group))
    return lambda: dist.all_gather_into_tensor(out, t, group=group)


def reduce_scatter(group):
    out = torch.empty(4 * KIB // 4)
    t = torch.ones(out.numel() * dist.get_world_size(group))
    return lambda: dist.reduce_scatter_tensor(out, t, group=group)


def barrier(group):
    return lambda: dist.barrier(group=group)


def ping_pong(group):
    t = torch.ones(KIB // 4)
    rank = dist.get_rank()

    def run():
        if rank == 0:
            dist.send(t, dst=1, group=group)
            dist.recv(t, src=1, group=group)
        elif rank == 1:
            dist.recv(t, src=0, group=group)
            dist.send(t, dst=0, group=group)
    return run


# name, maker, calls per measurement
ROWS = [
    ("all_reduce 64 B", all_reduce(64), 400),
    ("all_reduce 4 KiB", all_reduce(4 * KIB), 400),
    ("all_reduce 256 KiB", all_reduce(256 * KIB), 50),
    ("all_reduce 4 MiB", all_reduce(4 * MIB), 10),
    ("all_reduce 64 MiB", all_reduce(64 * MIB), 3),
    ("broadcast 4 KiB", broadcast, 400),
    ("all_gather_into_tensor 4 KiB per rank", all_gather, 400),
    ("reduce_scatter_tensor 4 KiB per rank", reduce_scatter, 400),
    ("barrier", barrier, 400),
    ("send/recv ping-pong 1 KiB (round trip)", ping_pong, 400),
]


def per_call_seconds(group, fn, calls):
    fn()  # warm up: first-call setup, pages of the buffers
    dist.barrier(group=group)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    dist.barrier(group=group)  # the slowest rank's end
    return (time.perf_counter() - start) / calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the rows here (rank 0)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    dist.init_process_group("gloo")
    groups = {
        "gloo": dist.new_group(backend="gloo"),
        "qccl": dist.new_group(backend="qccl"),
        "qccl sockets": dist.new_group(backend="qccl", pg_options=qccl.Options(force_network=True)),
    }
    assert qccl.stats(groups["qccl"])["shared_memory"]["used"], "qccl's ranks did not share memory"
    rows = []
    for name, make, calls in ROWS:
        fns = {backend: make(group) for backend, group in groups.items()}
        times = {backend: [] for backend in groups}
        for _ in range(args.repeats):
            for backend, group in groups.items():
                times[backend].append(per_call_seconds(group, fns[backend], calls))
        row = {"call": name, "ranks": dist.get_world_size()}
        row.update({f"{backend} us": statistics.median(t) * 1e6 for backend, t in times.items()})
        row["qccl vs gloo"] = row["gloo us"] / row["qccl us"]
        rows.append(row)
        if dist.get_rank() == 0:
            print(f"{name:42s} gloo {row['gloo us']:10.1f} us  qccl {row['qccl us']:10.1f} us  "
                  f"qccl sockets {row['qccl sockets us']:10.1f} us  qccl/gloo {row['qccl vs gloo']:6.1f}x", flush=True)
    if dist.get_rank() == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
