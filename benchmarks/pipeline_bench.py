"""Pipeline-parallel training throughput on Gloo and on qccl with each p2p codec.

    python benchmarks/pipeline_bench.py                        # 2 local ranks, loopback
    benchmarks/netlab --ranks 2 --rate 1gbit -- python benchmarks/pipeline_bench.py

Every configuration trains examples/train_pipeline.py's model (one stage per rank,
1F1B) from the same initial weights on the same batches, in one run, one after another.
Between stages flow the activations forward and their gradients backward; qccl's p2p
codec compresses both. Reported: samples/s, the median step time (slowest rank), the
activation bytes one stage boundary carries per step, and the loss reached.
"""

import argparse
import datetime
import json
import pathlib
import statistics
import sys

import torch
import torch.distributed as dist

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import train_pipeline  # noqa: E402

from qccl.bench.launch import network_description, parse_configs, run_or_spawn, threads_per_rank  # noqa: E402
from qccl.bench.runner import slowest_rank  # noqa: E402

CONFIGS = ["gloo", "qccl:none", "qccl:fp16", "qccl:bf16", "qccl:int8"]


def make_group(config):
    import qccl

    if config == "gloo":
        return dist.new_group(backend="gloo")
    codec = config.split(":", 1)[1]
    return dist.new_group(backend="qccl", pg_options=qccl.Options(p2p_codec=codec))


def run_rank(args) -> None:
    torch.set_num_threads(threads_per_rank())
    dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    shape = dict(width=args.width, heads=args.heads, context=args.context)
    results = []
    for config in args.configs:
        group = make_group(config)
        seconds = []
        history, _ = train_pipeline.train(
            group, schedule=args.schedule, steps=args.warmup + args.steps, batch_size=args.batch_size,
            microbatches=args.microbatches, layers_per_stage=args.layers_per_stage, seed=args.seed,
            step_seconds=seconds, **shape,
        )
        step_s = statistics.median(slowest_rank(seconds[args.warmup:]))
        losses = [None] * world
        dist.all_gather_object(losses, history)
        last = next(h for h in losses if h is not None)
        results.append({
            "config": config, "step_s": step_s, "samples_per_s": args.batch_size / step_s,
            "loss": statistics.mean(last[-args.loss_window:]),
        })
        if rank == 0:
            print(f"{config}: {step_s * 1e3:.0f} ms/step, loss {results[-1]['loss']:.4f}", file=sys.stderr, flush=True)
        dist.destroy_process_group(group)
    if rank == 0:
        report(args, results, world)
    dist.destroy_process_group()


def report(args, results, world):
    network = network_description()
    # Per step and stage boundary: every microbatch's activation forward, its gradient back.
    boundary_bytes = 2 * args.batch_size * args.context * args.width * 4
    gloo = next((r for r in results if r["config"] == "gloo"), None)
    print(f"# pipeline training ({args.schedule}), {world} stages, {network}, width {args.width}, batch "
          f"{args.batch_size}x{args.context} tokens in {args.microbatches} microbatches, "
          f"{boundary_bytes / 2**20:.1f} MiB of float32 activations+gradients per stage boundary and step, "
          f"median of {args.steps} steps, torch {torch.__version__}, "
          f"{datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"{'config':>10} {'samples/s':>10} {'step ms':>8} {'loss':>7} {'vs gloo':>8}")
    for r in results:
        r["vs_gloo"] = gloo["step_s"] / r["step_s"] if gloo else float("nan")
        print(f"{r['config']:>10} {r['samples_per_s']:>10.2f} {r['step_s'] * 1e3:>8.0f} {r['loss']:>7.4f} "
              f"{r['vs_gloo']:>8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"network": network, "ranks": world, "boundary_bytes_per_step": boundary_bytes,
                       "args": {k: v for k, v in vars(args).items() if k != "json"}, "results": results},
                      f, indent=1)
        print(f"wrote {args.json}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2, help="local ranks (stages) to start (ignored under torchrun/netlab)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: %(default)s")
    p.add_argument("--schedule", choices=sorted(train_pipeline.SCHEDULES), default="1f1b")
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--microbatches", type=int, default=4)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers-per-stage", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss-window", type=int, default=5, help="last steps averaged into the loss")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    args.configs = parse_configs(p, args.configs, CONFIGS)
    return args


def main():
    return run_or_spawn(run_rank, parse_args(), __file__)


if __name__ == "__main__":
    sys.exit(main())
