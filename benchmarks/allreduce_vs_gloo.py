"""All-reduce time of qccl against Gloo, measured side by side in one run.

    python benchmarks/allreduce_vs_gloo.py --ranks 2

Each rank holds three groups over the same ranks: Gloo, qccl, and qccl with the
cross-rank argument check off (QCCL_VERIFY=0). For each size the three are timed in
alternation (the machine is noisy), and the median time per all_reduce is reported with
Gloo's time divided by qccl's (>= 1 means qccl is as fast as Gloo).
"""

import argparse
import datetime
import multiprocessing as mp
import os
import socket
import statistics
import time

SIZES = [4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20]


def median_seconds(dist, tensor, group, iterations):
    dist.barrier(group=group)
    start = time.perf_counter()
    for _ in range(iterations):
        dist.all_reduce(tensor, group=group)
    return (time.perf_counter() - start) / iterations


def rank_main(rank, size, port, repeats, results):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size,
        timeout=datetime.timedelta(seconds=120),
    )
    import qccl  # noqa: F401 - registers the backend name

    groups = {"gloo": dist.group.WORLD, "qccl": dist.new_group(backend="qccl")}
    os.environ["QCCL_VERIFY"] = "0"  # read when the group is created
    groups["qccl verify=0"] = dist.new_group(backend="qccl")
    del os.environ["QCCL_VERIFY"]

    rows = []
    for nbytes in SIZES:
        tensor = torch.ones(nbytes // 4)
        iterations = max(3, min(200, (8 << 20) // nbytes))
        samples = {name: [] for name in groups}
        for name, group in groups.items():  # warm-up
            median_seconds(dist, tensor, group, 2)
        for _ in range(repeats):
            for name, group in groups.items():
                samples[name].append(median_seconds(dist, tensor, group, iterations))
        rows.append((nbytes, {name: statistics.median(s) for name, s in samples.items()}))
    if rank == 0:
        results.put(rows)
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=rank_main, args=(r, args.ranks, port, args.repeats, results)) for r in range(args.ranks)]
    for p in procs:
        p.start()
    rows = results.get(timeout=1800)
    for p in procs:
        p.join()

    print(f"all_reduce float32 SUM, {args.ranks} ranks on one machine (loopback), median of {args.repeats}")
    print(f"{'bytes':>10} {'gloo us':>10} {'qccl us':>10} {'verify=0 us':>12} {'gloo/qccl':>10} {'gloo/verify=0':>14}")
    for nbytes, t in rows:
        g, q, v = t["gloo"], t["qccl"], t["qccl verify=0"]
        print(f"{nbytes:>10} {g * 1e6:>10.1f} {q * 1e6:>10.1f} {v * 1e6:>12.1f} {g / q:>10.2f} {g / v:>14.2f}")


if __name__ == "__main__":
    main()
