"""DDP training throughput of Gloo, Gloo with PyTorch's compression hooks, and qccl codecs.

    python benchmarks/train_bench.py                        # 2 local ranks, loopback
    benchmarks/netlab --ranks 2 --rate 1gbit -- python benchmarks/train_bench.py

Every configuration trains the same transformer language model (the example's
CharTransformer, widened to about 25M parameters) from the same initial weights on the
same batches, in one run, one after another. For each it reports samples/s, the time per
step split into compute (the same step under DDP's no_sync(), which skips the
allreduces) and exposed communication (the rest), and the loss reached.
"""

import argparse
import datetime
import json
import pathlib
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.nn.parallel import DistributedDataParallel as DDP

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from char_lm import CharTransformer, batches, load_corpus  # noqa: E402

from qccl.bench.launch import network_description, parse_configs, run_or_spawn, threads_per_rank  # noqa: E402
from qccl.bench.runner import slowest_rank  # noqa: E402

CONFIGS = [
    "gloo", "gloo+fp16_hook", "gloo+bf16_hook", "gloo+powersgd4",
    "qccl:none", "qccl:fp16", "qccl:bf16", "qccl:int8", "qccl:int4",
]


def one_bucket_at_a_time(hook):
    """`hook`, but a bucket's hook starts only when the previous bucket's result is in.

    powerSGD_hook issues its second allreduce from a future callback; with several
    buckets that callback races with the next bucket's first allreduce, so ranks can
    issue them in different orders, and Gloo aborts with a size mismatch. Serializing
    buckets keeps the order identical on every rank (at the price of less overlap)."""
    previous = []

    def serialized(state, bucket):
        if previous:
            previous.pop().wait()
        future = hook(state, bucket)
        previous.append(future)
        return future

    return serialized


def make_ddp(config, model, groups):
    """DDP over the group `config` names, with PyTorch's hook where it asks for one."""
    import qccl

    backend, _, hook = config.partition("+")
    if backend not in groups:  # one group per backend, created in the same order on all ranks
        if backend.startswith("qccl"):
            options = qccl.Options(codec=backend.partition(":")[2])
            groups[backend] = dist.new_group(backend="qccl", pg_options=options)
        else:
            groups[backend] = dist.new_group(backend="gloo")
    group = groups[backend]
    ddp = DDP(model, process_group=group)
    if hook == "fp16_hook":
        ddp.register_comm_hook(group, default_hooks.fp16_compress_hook)
    elif hook == "bf16_hook":
        ddp.register_comm_hook(group, default_hooks.bf16_compress_hook)
    elif hook == "powersgd4":
        state = powerSGD_hook.PowerSGDState(
            process_group=group, matrix_approximation_rank=4, start_powerSGD_iter=2,
        )
        ddp.register_comm_hook(state, one_bucket_at_a_time(powerSGD_hook.powerSGD_hook))
    elif hook:
        raise ValueError(f"unknown hook in {config!r}")
    return ddp, group


def run_config(config, args, corpus, groups):
    """Trains from the seed's weights; returns this rank's measurements."""
    torch.manual_seed(args.seed)
    model = CharTransformer(args.width, args.layers, args.heads, args.context)
    ddp, group = make_ddp(config, model, groups)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=args.lr)
    data = batches(corpus, dist.get_rank(), dist.get_world_size(), args.batch_size, args.context, args.seed)

    def step():
        tokens, targets = next(data)
        loss = F.cross_entropy(ddp(tokens).flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(args.warmup):  # DDP rebuilds its buckets after the first step
        step()
    dist.barrier(group=group)
    step_times, losses = [], []
    for _ in range(args.steps):
        start = time.perf_counter()
        losses.append(step())
        step_times.append(time.perf_counter() - start)
    compute_times = []
    with ddp.no_sync():  # the same work without the allreduces: the compute share
        for _ in range(max(3, args.steps // 4)):
            start = time.perf_counter()
            step()
            compute_times.append(time.perf_counter() - start)
    dist.barrier(group=group)
    return {
        "step_s": statistics.median(step_times),
        "compute_s": statistics.median(compute_times),
        "loss": statistics.mean(losses[-args.loss_window:]),
    }


def run_rank(args) -> None:
    torch.set_num_threads(threads_per_rank())
    dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    corpus, groups, results = load_corpus(), {}, []
    params = sum(p.numel() for p in CharTransformer(args.width, args.layers, args.heads, args.context).parameters())
    for config in args.configs:
        result = run_config(config, args, corpus, groups)
        # Times as the slowest rank saw them; the loss is rank 0's (all train one model).
        result["step_s"], result["compute_s"] = slowest_rank([result["step_s"], result["compute_s"]])
        result["config"] = config
        result["samples_per_s"] = args.batch_size * world / result["step_s"]
        results.append(result)
        if rank == 0:
            print(f"{config}: {result['step_s'] * 1e3:.0f} ms/step, loss {result['loss']:.4f}",
                  file=sys.stderr, flush=True)
    if rank == 0:
        report(args, results, params, world)
    dist.destroy_process_group()


def report(args, results, params, world):
    network = network_description()
    gloo = next((r for r in results if r["config"] == "gloo"), None)
    print(f"# DDP training, {world} ranks, {network}, {params / 1e6:.1f}M parameters, batch "
          f"{args.batch_size}x{args.context} tokens per rank, median of {args.steps} steps, "
          f"torch {torch.__version__}, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"{'config':>16} {'samples/s':>10} {'step ms':>8} {'compute ms':>10} {'comm ms':>8} "
          f"{'loss':>7} {'vs gloo':>8}")
    for r in results:
        ratio = gloo["step_s"] / r["step_s"] if gloo else float("nan")
        r["vs_gloo"] = ratio
        comm = max(0.0, r["step_s"] - r["compute_s"])
        print(f"{r['config']:>16} {r['samples_per_s']:>10.2f} {r['step_s'] * 1e3:>8.0f} "
              f"{r['compute_s'] * 1e3:>10.0f} {comm * 1e3:>8.0f} {r['loss']:>7.4f} {ratio:>8.2f}")
    if args.json:
        write_json(args, network, world, params, results)


def add_run_arguments(p, steps, warmup):
    """The options every training benchmark takes: ranks, steps, the model and the data."""
    p.add_argument("--ranks", type=int, default=2, help="local ranks to start (ignored under torchrun/netlab)")
    p.add_argument("--steps", type=int, default=steps, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--batch-size", type=int, default=2, help="sequences per rank and step")
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss-window", type=int, default=10, help="last steps averaged into the loss")
    p.add_argument("--json", help="also write the results to this file")


def write_json(args, network, world, params, results):
    with open(args.json, "w") as f:
        json.dump({"network": network, "ranks": world, "parameters": params,
                   "args": {k: v for k, v in vars(args).items() if k != "json"},
                   "results": results}, f, indent=1)
    print(f"wrote {args.json}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: %(default)s")
    add_run_arguments(p, steps=30, warmup=3)
    args = p.parse_args(argv)
    args.configs = parse_configs(p, args.configs, CONFIGS)
    return args


def main():
    return run_or_spawn(run_rank, parse_args(), __file__)


if __name__ == "__main__":
    sys.exit(main())
