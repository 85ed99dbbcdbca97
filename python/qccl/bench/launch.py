"""Starting benchmark ranks on this machine, sharing its cores between them, and saying
what network they run on."""

import os
import socket
import subprocess
import sys
import time


def under_launcher() -> bool:
    """Whether torchrun, benchmarks/netlab or a user already made this process one rank."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def network_description() -> str:
    """What the ranks talk over: the netlab link (as the lab measured it) or loopback."""
    if "QCCL_LAB_RATE" in os.environ:
        measured = os.environ.get("QCCL_LAB_MEASURED", "?")
        return f"netlab {os.environ['QCCL_LAB_RATE']} link (measured {measured})"
    return "one machine, loopback"


def threads_per_rank() -> int:
    """OMP_NUM_THREADS when set (netlab sets it: its ranks share one machine), otherwise
    this machine's cores split among its local ranks."""
    if os.environ.get("OMP_NUM_THREADS"):
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return max(1, (os.cpu_count() or 1) // local)


def spawn_ranks(command: list[str], ranks: int) -> int:
    """Runs `command` as `ranks` processes on loopback with torchrun's variables; returns
    the first failing exit code (the other ranks are stopped then), or 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(ranks):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   WORLD_SIZE=str(ranks), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(ranks))
        procs.append(subprocess.Popen(command, env=env))
    code = 0
    try:
        while procs:
            for p in list(procs):
                if p.poll() is None:
                    continue
                procs.remove(p)
                if p.returncode != 0 and code == 0:
                    code = p.returncode
                    for other in procs:  # they would wait for the failed rank until the timeout
                        other.terminate()
            time.sleep(0.1)
    finally:
        for p in procs:
            p.terminate()
    return code


def run_or_spawn(run_rank, args, script: str) -> int:
    """The benchmark scripts' entry: under a launcher (torchrun, netlab) this process is
    one rank and runs `run_rank(args)`; otherwise it starts `args.ranks` local ranks that
    run `script` with this process's arguments."""
    if under_launcher():
        run_rank(args)
        return 0
    return spawn_ranks([sys.executable, os.path.abspath(script), *sys.argv[1:]], args.ranks)


def parse_configs(parser, text: str, known: list[str]) -> list[str]:
    """'a,b' -> ['a', 'b'], each one of `known`; a usage error (parser.error) otherwise."""
    configs = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in configs if c not in known]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {known}")
    return configs
