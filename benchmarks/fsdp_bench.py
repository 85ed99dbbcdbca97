"""FSDP2 training throughput of Gloo and qccl with compressed gradients and weights.

    python benchmarks/fsdp_bench.py                                  # 2 local ranks, loopback
    benchmarks/netlab --ranks 2 --rate 1gbit -- python benchmarks/fsdp_bench.py

Every configuration trains the same transformer language model (train_bench.py's, about
25M parameters) from the same initial weights on the same batches, one after another,
with fully_shard on each transformer block and on the root. A configuration is a backend
and, for qccl, the gradient codec (reduce-scatter) and the weight codec (all-gather):
"qccl:int8/bf16" reduce-scatters gradients in int8 and all-gathers weights in bf16. For
each it reports samples/s, the bytes a rank sent per step (qccl.stats) and the loss.
"""

import argparse
import datetime
import pathlib
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from train_bench import add_run_arguments, write_json  # noqa: E402  (this folder)
from char_lm import CharTransformer, batches, load_corpus  # noqa: E402

from qccl.bench.launch import network_description, run_or_spawn, threads_per_rank  # noqa: E402
from qccl.bench.runner import slowest_rank  # noqa: E402

CONFIGS = ["gloo", "qccl:none/none", "qccl:int8/none", "qccl:int8/bf16", "qccl:int8/int8", "qccl:int4/int8"]


def group_for(config, groups):
    """The group `config` names, created once (in the same order on every rank)."""
    import qccl

    if config not in groups:
        if config.startswith("qccl"):
            gradients, _, weights = config.partition(":")[2].partition("/")
            options = qccl.Options(codec=gradients, allgather_codec=weights or "none", error_feedback=True)
            groups[config] = dist.new_group(backend="qccl", pg_options=options)
        else:
            groups[config] = dist.new_group(backend="gloo")
    return groups[config]


def run_config(config, args, corpus, groups):
    """Trains from the seed's weights; returns this rank's measurements."""
    import qccl

    group = group_for(config, groups)
    torch.manual_seed(args.seed)
    model = CharTransformer(args.width, args.layers, args.heads, args.context)
    mesh = DeviceMesh.from_group(group, "cpu")
    for block in model.blocks.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    data = batches(corpus, dist.get_rank(), dist.get_world_size(), args.batch_size, args.context, args.seed)

    def step():
        tokens, targets = next(data)
        loss = F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    dist.barrier(group=group)
    if config.startswith("qccl"):
        qccl.reset_stats(group)
    step_times, losses = [], []
    for _ in range(args.steps):
        start = time.perf_counter()
        losses.append(step())
        step_times.append(time.perf_counter() - start)
    dist.barrier(group=group)
    sent = None
    if config.startswith("qccl"):
        stats = qccl.stats(group)
        sent = sum(stats[op]["wire_bytes"] for op in ("reduce_scatter", "all_gather")) / args.steps
    return {"step_s": statistics.median(step_times), "loss": statistics.mean(losses[-args.loss_window:]),
            "bytes_per_step": sent}


def run_rank(args) -> None:
    torch.set_num_threads(threads_per_rank())
    dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    corpus, groups, results = load_corpus(), {}, []
    params = sum(p.numel() for p in CharTransformer(args.width, args.layers, args.heads, args.context).parameters())
    for config in args.configs:
        result = run_config(config, args, corpus, groups)
        result["step_s"] = slowest_rank([result["step_s"]])[0]
        result["config"] = config
        result["samples_per_s"] = args.batch_size * world / result["step_s"]
        results.append(result)
        if rank == 0:
            print(f"{config}: {result['step_s'] * 1e3:.0f} ms/step, loss {result['loss']:.4f}", file=sys.stderr,
                  flush=True)
    if rank == 0:
        report(args, results, params, world)
    dist.destroy_process_group()


def report(args, results, params, world):
    network = network_description()
    gloo = next((r for r in results if r["config"] == "gloo"), None)
    print(f"# FSDP2 training, {world} ranks, {network}, {params / 1e6:.1f}M parameters, batch "
          f"{args.batch_size}x{args.context} tokens per rank, median of {args.steps} steps, "
          f"torch {torch.__version__}, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"{'config':>16} {'samples/s':>10} {'step ms':>8} {'MB/step':>8} {'loss':>7} {'vs gloo':>8}")
    for r in results:
        r["vs_gloo"] = gloo["step_s"] / r["step_s"] if gloo else float("nan")
        sent = f"{r['bytes_per_step'] / 1e6:8.1f}" if r["bytes_per_step"] is not None else f"{'-':>8}"
        print(f"{r['config']:>16} {r['samples_per_s']:>10.2f} {r['step_s'] * 1e3:>8.0f} {sent} {r['loss']:>7.4f} "
              f"{r['vs_gloo']:>8.2f}")
    if args.json:
        write_json(args, network, world, params, results)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help="comma-separated gloo or qccl:GRADIENT_CODEC/WEIGHT_CODEC: %(default)s")
    add_run_arguments(p, steps=20, warmup=2)
    args = p.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for config in args.configs:
        if config != "gloo":
            import qccl

            base, _, codecs = config.partition(":")
            gradients, _, weights = codecs.partition("/")
            if base != "qccl" or not gradients:
                p.error(f"unknown configuration {config!r}: gloo or qccl:GRADIENT_CODEC/WEIGHT_CODEC")
            try:
                qccl.Options(codec=gradients, allgather_codec=weights or "none")
            except ValueError as e:
                p.error(f"{config}: {e}")
    return args


def main():
    return run_or_spawn(run_rank, parse_args(), __file__)


if __name__ == "__main__":
    sys.exit(main())
