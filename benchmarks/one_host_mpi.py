"""The floor for benchmarks/one_host_bench.py: the same rows through Open MPI's shared
memory (mpi4py on numpy buffers, no torch in the loop).

    mpirun --allow-run-as-root --mca btl self,vader -np 2 python benchmarks/one_host_mpi.py [--json out.json]

Optional: needs Open MPI (Debian: openmpi-bin libopenmpi-dev) and `pip install mpi4py`;
qccl itself never uses MPI. Rank 0 prints the median over repeats of the mean time per call.
"""

import argparse
import json
import statistics
import time

import numpy as np
from mpi4py import MPI

KIB, MIB = 1 << 10, 1 << 20


def all_reduce(nbytes):
    def make(comm):
        send, recv = np.ones(nbytes // 4, np.float32), np.empty(nbytes // 4, np.float32)
        return lambda: comm.Allreduce(send, recv)
    return make


def broadcast(comm):
    t = np.ones(KIB, np.float32)
    return lambda: comm.Bcast(t, root=0)


def all_gather(comm):
    t = np.ones(KIB, np.float32)
    out = np.empty(KIB * comm.size, np.float32)
    return lambda: comm.Allgather(t, out)


def reduce_scatter(comm):
    t = np.ones(KIB * comm.size, np.float32)
    out = np.empty(KIB, np.float32)
    return lambda: comm.Reduce_scatter_block(t, out)


def barrier(comm):
    return comm.Barrier


def ping_pong(comm):
    t = np.ones(KIB // 4, np.float32)

    def run():
        if comm.rank == 0:
            comm.Send(t, dest=1)
            comm.Recv(t, source=1)
        elif comm.rank == 1:
            comm.Recv(t, source=0)
            comm.Send(t, dest=0)
    return run


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rows = []
    for name, make, calls in ROWS:
        fn = make(comm)
        fn()
        times = []
        for _ in range(args.repeats):
            comm.Barrier()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            comm.Barrier()
            times.append((time.perf_counter() - start) / calls)
        row = {"call": name, "ranks": comm.size, "mpi us": statistics.median(times) * 1e6}
        rows.append(row)
        if comm.rank == 0:
            print(f"{name:42s} mpi {row['mpi us']:10.1f} us", flush=True)
    if comm.rank == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
