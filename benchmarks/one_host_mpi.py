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

from one_host_rows import ALL_REDUCE_BYTES, PING_FLOATS, ROWS, SMALL_FLOATS


def all_reduce(nbytes):
    def make(comm):
        send, recv = np.ones(nbytes // 4, np.float32), np.empty(nbytes // 4, np.float32)
        return lambda: comm.Allreduce(send, recv)
    return make


def broadcast(comm):
    t = np.ones(SMALL_FLOATS, np.float32)
    return lambda: comm.Bcast(t, root=0)


def all_gather(comm):
    t = np.ones(SMALL_FLOATS, np.float32)
    out = np.empty(SMALL_FLOATS * comm.size, np.float32)
    return lambda: comm.Allgather(t, out)


def reduce_scatter(comm):
    t = np.ones(SMALL_FLOATS * comm.size, np.float32)
    out = np.empty(SMALL_FLOATS, np.float32)
    return lambda: comm.Reduce_scatter_block(t, out)


def barrier(comm):
    return comm.Barrier


def ping_pong(comm):
    t = np.ones(PING_FLOATS, np.float32)

    def run():
        if comm.rank == 0:
            comm.Send(t, dest=1)
            comm.Recv(t, source=1)
        elif comm.rank == 1:
            comm.Recv(t, source=0)
            comm.Send(t, dest=0)
    return run


MAKERS = {name: all_reduce(nbytes) for name, nbytes in ALL_REDUCE_BYTES.items()}
MAKERS.update({"broadcast 4 KiB": broadcast, "all_gather_into_tensor 4 KiB per rank": all_gather,
               "reduce_scatter_tensor 4 KiB per rank": reduce_scatter, "barrier": barrier,
               "send/recv ping-pong 1 KiB (round trip)": ping_pong})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rows = []
    for name, calls in ROWS:
        fn = MAKERS[name](comm)
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
