"""python -m qccl.bench: collectives timed on several backends side by side.

    python -m qccl.bench                     # 2 local ranks, every collective, 4 KiB..256 MiB
    python -m qccl.bench --ranks 4 --collectives allreduce --max-size 64M
    benchmarks/netlab --ranks 2 --rate 1gbit -- python -m qccl.bench --collectives allreduce

Without RANK/WORLD_SIZE in the environment it starts --ranks processes on this machine
(loopback); under torchrun or benchmarks/netlab every process is one rank. Rank 0 prints
an nccl-tests style table and writes results.csv, results.json and one PNG per collective
into --out.
"""

import argparse
import datetime
import os
import platform
import sys
import time

from .backends import DEFAULT_BACKENDS, create_groups, parse_backends
from .collectives import COLLECTIVES
from .launch import network_description, spawn_ranks, threads_per_rank, under_launcher
from .report import add_ratios, format_table, human_bytes, write_files

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """'4K', '256M', '64MiB', '1024' -> bytes (binary units)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in _UNITS else ""
    try:
        return int(float(t[: len(t) - len(unit)]) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4K, 64M)") from None


def parse_rate(text: str) -> float:
    """'1gbit', '100mbit', '10Gbit', '1e9' -> bits per second."""
    t = text.strip().lower().removesuffix("/s").removesuffix("bit").removesuffix("bps")
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(t[-1:], 1)
    try:
        return float(t.rstrip("kmg")) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 1gbit, 100mbit)") from None


_DEFAULT_MIN_SIZE = "4K"
_DEFAULT_MAX_SIZE = "256M"
_DEFAULT_STEP_FACTOR = 4


def size_range(min_size: int, max_size: int, step_factor: int) -> list[int]:
    """min_size, min_size x factor, ... up to max_size (a factor below 2 counts as 2)."""
    sizes, size = [], min_size
    while size <= max_size:
        sizes.append(size)
        size *= max(2, step_factor)
    return sizes


def size_text(size: int) -> str:
    """4096 -> '4K': the form --sizes takes."""
    for unit in ("G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def sizes_help() -> str:
    """--help's epilog: without it a user had to read the code to learn how sizes are
    written and which sizes a plain run measures."""
    defaults = size_range(parse_size(_DEFAULT_MIN_SIZE), parse_size(_DEFAULT_MAX_SIZE), _DEFAULT_STEP_FACTOR)
    return (
        "sizes: bytes with an optional binary unit K, M or G (KiB, MB and the like are read\n"
        "the same way): 4K = 4096 bytes, 64M = 64 MiB, 1.5M works too. A size is the larger\n"
        "of a rank's input and output buffer.\n"
        f"default sizes: --min-size {_DEFAULT_MIN_SIZE} to --max-size {_DEFAULT_MAX_SIZE}, "
        f"times --step-factor {_DEFAULT_STEP_FACTOR} per row:\n"
        f"  {','.join(size_text(s) for s in defaults)}\n"
        "--sizes lists the sizes instead.\n\n"
        "examples:\n"
        "  python -m qccl.bench --sizes 4K,64K,1M,16M,64M\n"
        "  python -m qccl.bench --ranks 4 --collectives allreduce --backends gloo,qccl:int8 --max-size 64M\n"
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m qccl.bench", description=__doc__.splitlines()[0],
                                epilog=sizes_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=2, help="local ranks to start (ignored under torchrun)")
    p.add_argument("--collectives", default=",".join(COLLECTIVES), help="comma-separated: %(default)s")
    p.add_argument("--backends", default=DEFAULT_BACKENDS, help="comma-separated: %(default)s")
    # String defaults go through parse_size too, so --help prints them as a user writes them.
    p.add_argument("--min-size", type=parse_size, default=_DEFAULT_MIN_SIZE, metavar="SIZE",
                   help="smallest size, e.g. 4K (default %(default)s)")
    p.add_argument("--max-size", type=parse_size, default=_DEFAULT_MAX_SIZE, metavar="SIZE",
                   help="largest size, e.g. 64M (default %(default)s)")
    p.add_argument("--step-factor", type=int, default=_DEFAULT_STEP_FACTOR,
                   help="size multiplier between rows (default %(default)s)")
    p.add_argument("--sizes", metavar="SIZE,...",
                   help="comma-separated sizes instead of the min/max/factor range, e.g. 4K,64K,1M")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per backend and size")
    p.add_argument("--rounds", type=int, default=3, help="alternations between backends")
    p.add_argument("--iters", type=int, help="timed calls per round (default: by size)")
    # argparse runs a string default through `type` too, so QCCL_LAB_RATE is parsed.
    p.add_argument("--link-rate", type=parse_rate, default=os.environ.get("QCCL_LAB_RATE"),
                   help="shaped link rate, for the wire bound column (netlab sets it)")
    p.add_argument("--out", default=None, help="output folder (default qccl-bench-<time>)")
    args = p.parse_args(argv)
    if args.sizes:
        try:
            args.size_list = [parse_size(s) for s in args.sizes.split(",")]
        except argparse.ArgumentTypeError as e:
            p.error(str(e))
    else:
        args.size_list = size_range(args.min_size, args.max_size, args.step_factor)
    args.collective_list = [c.strip() for c in args.collectives.split(",") if c.strip()]
    unknown = [c for c in args.collective_list if c not in COLLECTIVES]
    if unknown:
        p.error(f"unknown collective(s) {unknown}; choose from {list(COLLECTIVES)}")
    try:
        parse_backends(args.backends)
    except ValueError as e:
        p.error(str(e))
    args.out = args.out or datetime.datetime.now().strftime("qccl-bench-%Y%m%d-%H%M%S")
    return args


def run_rank(args) -> None:
    import torch
    import torch.distributed as dist

    args.dtype = getattr(torch, args.dtype)
    torch.set_num_threads(threads_per_rank())
    dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=30))
    rank = dist.get_rank()

    def log(message):
        if rank == 0:
            print(message, file=sys.stderr, flush=True)

    backends = create_groups(parse_backends(args.backends), log)
    from .runner import measure

    steps = [(c, size) for c in args.collective_list for size in args.size_list]
    rows, started = [], time.monotonic()
    for step, (collective, size) in enumerate(steps, 1):
        new = measure(collective, size, backends, args, args.link_rate)
        rows += new
        times = ", ".join(f"{r['backend']} {r['time_us']:.0f}us" for r in new)
        log(f"[{step:>3}/{len(steps)}] {time.monotonic() - started:6.0f}s "
            f"{collective} {human_bytes(size)}: {times}")
    if rank == 0:
        import qccl

        metadata = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": "python -m qccl.bench " + " ".join(sys.argv[1:]),
            "ranks": dist.get_world_size(),
            "network": network_description(),
            "link_rate_bits_per_s": args.link_rate,
            "force_network": os.environ.get("QCCL_FORCE_NETWORK", "0") == "1",
            "host": platform.node(),
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "qccl": qccl.__version__,
            "threads_per_rank": torch.get_num_threads(),
            "backends": [b.name for b in backends],
        }
        add_ratios(rows)
        header = [
            f"{metadata['ranks']} ranks, {metadata['network']}, torch {metadata['torch']}, "
            f"qccl {metadata['qccl']}, {metadata['date']}",
            "time: median over calls of the slowest rank; busbw = algbw x the collective's "
            "nccl-tests factor; vs_gloo = gloo time / this time",
        ]
        print(format_table(rows, header))
        for path in write_files(rows, metadata, args.out):
            print(f"wrote {path}")
    dist.destroy_process_group()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if under_launcher():
        run_rank(args)
        return 0
    # Only rank 0 writes files, but every rank must agree on the folder's name.
    has_out = any(a == "--out" or a.startswith("--out=") for a in argv)
    argv = argv if has_out else [*argv, "--out", args.out]
    return spawn_ranks([sys.executable, "-m", "qccl.bench", *argv], args.ranks)


if __name__ == "__main__":
    sys.exit(main())
