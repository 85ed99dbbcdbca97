"""Latency-bound calls of qccl against Gloo, measured side by side in one run.

    torchrun --nproc-per-node 2 benchmarks/latency_bench.py
    benchmarks/netlab --ranks 2 --rate 1gbit --delay 10 -- python benchmarks/latency_bench.py

The calls issue 15 targets on a high-latency link: a 4 KiB all_reduce (float32, and
int32, which rides in qccl's argument check at any world size); 16 async
256 KiB all_reduces posted at once, then waited (DDP's bucket burst), and the same with
all_gather_into_tensor (FSDP's); a 4 KiB broadcast; a 1 KiB send/recv
ping-pong between ranks 0 and 1; a 64 MiB all_reduce and reduce_scatter_tensor; and the two async all_reduces of
DDP's buckets for examples/train_diloco.py's model (1 MiB and 0.9 MiB). Every backend (Gloo, qccl with
codec none, qccl with int8) has its own group over the same ranks, and each repeat runs
them in turn, so the machine's noise hits them alike. Rank 0 prints the median time of
each and Gloo's time divided by it (> 1: faster than Gloo); --json writes the rows.
"""

import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist

KIB, MIB = 1 << 10, 1 << 20


def timed(group, fn):
    dist.barrier(group=group)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def small(group):
    tensor = torch.ones(4 * KIB // 4)
    return lambda: dist.all_reduce(tensor, group=group)


def small_int(group):
    # An exact integer sum small enough to ride in qccl's argument check at any world
    # size (docs/design.md): its time is the check's cost per call.
    tensor = torch.ones(4 * KIB // 4, dtype=torch.int32)
    return lambda: dist.all_reduce(tensor, group=group)


def burst(group):
    tensors = [torch.ones(256 * KIB // 4) for _ in range(16)]

    def run():
        works = [dist.all_reduce(t, group=group, async_op=True) for t in tensors]
        for work in works:
            work.wait()

    return run


def ddp_buckets(group):
    # The example transformer's gradients (0.47M parameters) as DDP buckets them: a first
    # bucket of 1 MiB, the rest in a second, both posted async, then waited.
    tensors = [torch.ones(262144), torch.ones(230000)]

    def run():
        works = [dist.all_reduce(t, group=group, async_op=True) for t in tensors]
        for work in works:
            work.wait()

    return run


def gather_burst(group):
    # FSDP's pattern: every layer's parameters all-gathered async, then waited.
    size = dist.get_world_size(group)
    shards = [torch.ones(256 * KIB // 4 // size) for _ in range(16)]
    outputs = [torch.empty(256 * KIB // 4) for _ in range(16)]

    def run():
        works = [dist.all_gather_into_tensor(o, s, group=group, async_op=True) for o, s in zip(outputs, shards)]
        for work in works:
            work.wait()

    return run


def small_broadcast(group):
    tensor = torch.ones(4 * KIB // 4)
    return lambda: dist.broadcast(tensor, dist.get_global_rank(group, 0), group=group)


def ping_pong(group):
    tensor = torch.ones(KIB // 4)
    rank = dist.get_rank(group)
    peer = dist.get_global_rank(group, 1 - rank) if rank < 2 else None

    def run():
        if rank == 0:
            dist.send(tensor, peer, group=group)
            dist.recv(tensor, peer, group=group)
        elif rank == 1:
            dist.recv(tensor, peer, group=group)
            dist.send(tensor, peer, group=group)

    return run


def large(group):
    tensor = torch.ones(64 * MIB // 4)
    return lambda: dist.all_reduce(tensor, group=group)


def large_reduce_scatter(group):
    tensor = torch.ones(64 * MIB // 4)
    output = torch.empty(tensor.numel() // dist.get_world_size(group))
    return lambda: dist.reduce_scatter_tensor(output, tensor, group=group)


CALLS = {
    "all_reduce 4 KiB": (small, 10),
    "all_reduce 4 KiB int32": (small_int, 10),
    "16 async all_reduce 256 KiB": (burst, 3),
    "DDP buckets 1 + 0.9 MiB": (ddp_buckets, 3),
    "16 async all_gather 256 KiB": (gather_burst, 3),
    "broadcast 4 KiB": (small_broadcast, 10),
    "send/recv 1 KiB ping-pong": (ping_pong, 10),
    "all_reduce 64 MiB": (large, 1),
    "reduce_scatter 64 MiB": (large_reduce_scatter, 1),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", default=",".join(CALLS), help="comma-separated subset of: " + ", ".join(CALLS))
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    import qccl

    groups = {
        "gloo": dist.new_group(backend="gloo"),
        "qccl none": dist.new_group(backend="qccl", pg_options=qccl.Options(codec="none")),
        "qccl int8": dist.new_group(backend="qccl", pg_options=qccl.Options(codec="int8")),
    }
    rows = []
    for call in args.calls.split(","):
        make, inner = CALLS[call]
        runs = {name: make(group) for name, group in groups.items()}
        samples = {name: [] for name in groups}
        for name, run in runs.items():  # warm-up: connections, buffers, first-call costs
            timed(groups[name], run)
        for _ in range(args.repeats):
            for name, run in runs.items():
                samples[name].append(timed(groups[name], lambda: [run() for _ in range(inner)]) / inner)
        medians = {name: statistics.median(s) for name, s in samples.items()}
        rows.append({"call": call, "seconds": medians})
        if dist.get_rank() == 0:
            cells = "  ".join(f"{name} {1e3 * s:8.2f} ms ({medians['gloo'] / s:4.2f}x)" for name, s in medians.items())
            print(f"{call:30s} {cells}", flush=True)
    if dist.get_rank() == 0:
        link = os.environ.get("QCCL_LAB_MEASURED", "loopback")
        print(f"{dist.get_world_size()} ranks, link: {link}; (Nx) = Gloo's time / this one's")
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"ranks": dist.get_world_size(), "link": link, "rows": rows}, out, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
