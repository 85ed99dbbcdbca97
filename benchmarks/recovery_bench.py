"""Recovery time after a rank is SIGKILLed: from the kill to the survivors' next successful
all_reduce, for qccl healing in place with dist._reconfigure (a group made with
enable_reconfigure=True; the survivors' handles), qccl healing with dist.shrink_group,
qccl with a fresh group, and Gloo with a fresh group (what torchft does on every quorum
change, its quorum's own time aside).

    python benchmarks/recovery_bench.py --ranks 4 --repeats 3 [--json out.json]

Each repeat starts the ranks (one host: qccl goes through shared memory, unless
--force-network), runs a few all_reduces, then the last rank kills itself while the others
loop on all_reduce. Each survivor notes when its call failed (detection) and when its
first all_reduce on the healed group returned (recovery), both counted from the kill.
Rank 0 prints the median over repeats of the slowest survivor's times.
"""

import argparse
import datetime
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import time

METHODS = ("qccl reconfigure", "qccl shrink", "qccl fresh group", "gloo fresh group")
TIMEOUT = datetime.timedelta(seconds=30)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank, size, port, method, killed_at, results, force_network):
    if force_network:
        os.environ["QCCL_FORCE_NETWORK"] = "1"
    import torch
    import torch.distributed as dist

    import qccl

    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, size, rank == 0, timeout=TIMEOUT)
    backend = "gloo" if method.startswith("gloo") else "qccl"
    reconfigure = method == "qccl reconfigure"
    dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=TIMEOUT,
                            enable_reconfigure=reconfigure)
    if reconfigure:  # the first members: every rank's handle, in rank order
        store.set(f"handle/{rank}", dist._get_reconfigure_handle())
        handles = [store.get(f"handle/{r}").decode() for r in range(size)]
        dist._reconfigure(uuid=1, handles=handles)
    t = torch.ones(1000)
    for _ in range(5):
        dist.all_reduce(t)
    victim = size - 1
    if rank == victim:
        dist.barrier()
        killed_at.value = time.time()
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()
    try:
        while True:
            dist.all_reduce(t)
    except Exception:  # noqa: BLE001 - the failure this measures
        detected = time.time()
    if reconfigure:
        dist._reconfigure(uuid=2, handles=handles[:victim])  # the survivors, in place
        group = dist.group.WORLD
    elif method == "qccl shrink":
        group = dist.shrink_group([victim], shrink_flags=dist.distributed_c10d.SHRINK_ABORT)
    else:
        fresh = dist.PrefixStore("recovered/", store)
        if backend == "qccl":
            group = qccl.create_process_group(fresh, rank, size - 1, timeout=TIMEOUT)
        else:
            group = dist.ProcessGroupGloo(fresh, rank, size - 1, TIMEOUT)
    ones = torch.ones(1000)
    if isinstance(group, dist.ProcessGroup):
        dist.all_reduce(ones, group=group)
    else:  # Gloo's backend itself, as torchft holds it
        group.allreduce([ones]).wait()
    recovered = time.time()
    assert ones[0].item() == size - 1, ones[0]
    while killed_at.value == 0.0:  # the victim wrote it before it died
        time.sleep(0.001)
    results.put((rank, detected - killed_at.value, recovered - killed_at.value))
    results.close()
    results.join_thread()  # sent before the exit below
    os._exit(0)  # the failed default group would wait for its dead peer at teardown


def run_once(size, method, force_network):
    ctx = mp.get_context("spawn")
    killed_at, results = ctx.Value("d", 0.0), ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=rank_main, args=(r, size, port, method, killed_at, results, force_network))
             for r in range(size)]
    for p in procs:
        p.start()
    times = [results.get(timeout=120) for _ in range(size - 1)]
    for p in procs:
        p.join(timeout=60)
    return max(t[1] for t in times), max(t[2] for t in times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--force-network", action="store_true", help="qccl over sockets, as across hosts")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of: " + ", ".join(METHODS))
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    rows = []
    for method in args.methods.split(","):
        runs = [run_once(args.ranks, method, args.force_network) for _ in range(args.repeats)]
        row = {"method": method, "ranks": args.ranks, "force_network": args.force_network,
               "detected s": statistics.median(r[0] for r in runs),
               "recovered s": statistics.median(r[1] for r in runs), "runs": runs}
        rows.append(row)
        print(f"{method:18s} {args.ranks} ranks: failure seen after {row['detected s'] * 1e3:7.1f} ms, "
              f"next all_reduce done after {row['recovered s'] * 1e3:7.1f} ms (medians of {args.repeats})",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
