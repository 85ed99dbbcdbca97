"""Per-call time on one host: qccl through shared memory against Gloo (and qccl over its
sockets, force_network), side by side in one run.

    torchrun --nproc-per-node 2 benchmarks/one_host_bench.py [--repeats 5] [--json out.json]
    torchrun --nproc-per-node 4 benchmarks/one_host_bench.py [--rows "all_reduce 4 MiB" barrier]

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

from one_host_rows import ALL_REDUCE_BYTES, PING_FLOATS, ROWS, SMALL_FLOATS


def all_reduce(nbytes):
    def make(group):
        t = torch.ones(nbytes // 4)
        return lambda: dist.all_reduce(t, group=group)
    return make


def broadcast(group):
    t = torch.ones(SMALL_FLOATS)
    return lambda: dist.broadcast(t, src=0, group=group)


def all_gather(group):
    t = torch.ones(SMALL_FLOATS)
    out = torch.empty(t.numel() * dist.get_world_size(group))
    return lambda: dist.all_gather_into_tensor(out, t, group=group)


def reduce_scatter(group):
    out = torch.empty(SMALL_FLOATS)
    t = torch.ones(out.numel() * dist.get_world_size(group))
    return lambda: dist.reduce_scatter_tensor(out, t, group=group)


def barrier(group):
    return lambda: dist.barrier(group=group)


def ping_pong(group):
    t = torch.ones(PING_FLOATS)
    rank = dist.get_rank()

    def run():
        if rank == 0:
            dist.send(t, dst=1, group=group)
            dist.recv(t, src=1, group=group)
        elif rank == 1:
            dist.recv(t, src=0, group=group)
            dist.send(t, dst=0, group=group)
    return run


MAKERS = {name: all_reduce(nbytes) for name, nbytes in ALL_REDUCE_BYTES.items()}
MAKERS.update({"broadcast 4 KiB": broadcast, "all_gather_into_tensor 4 KiB per rank": all_gather,
               "reduce_scatter_tensor 4 KiB per rank": reduce_scatter, "barrier": barrier,
               "send/recv ping-pong 1 KiB (round trip)": ping_pong})


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
    parser.add_argument("--rows", nargs="+", metavar="TEXT",
                        help="run only the rows whose call contains one of these texts (default: every row)")
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
    for name, calls in ROWS:
        if args.rows and not any(text in name for text in args.rows):
            continue
        fns = {backend: MAKERS[name](group) for backend, group in groups.items()}
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
