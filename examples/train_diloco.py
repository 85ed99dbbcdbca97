"""Training across slow links: the example's transformer with DDP, LocalSGD or DiLoCo.

The model and the data are char_lm.py's; only the optimizer step differs. The codec of
the group (QCCL_CODEC, with QCCL_ERROR_FEEDBACK) compresses whatever the algorithm sends.

    torchrun --nproc-per-node 2 examples/train_diloco.py --algorithm ddp
    QCCL_CODEC=int4 QCCL_ERROR_FEEDBACK=1 torchrun --nproc-per-node 2 examples/train_diloco.py \\
        --algorithm diloco --sync-every 50 --fragments 2 --sync-delay 5

It prints the loss, tokens/s and the bytes each rank sent per token.
"""

import argparse
import math
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import qccl
from char_lm import CharTransformer, add_data_arguments, batches, load_corpus, use_a_share_of_the_cores
from qccl.algorithms import DiLoCo, LocalSGD


def make_stepper(args, model):
    """(module to run, object with zero_grad() and step()) for --algorithm."""
    inner = torch.optim.AdamW(model.parameters(), lr=args.lr)
    if args.algorithm == "ddp":
        ddp = DDP(model)
        return ddp, torch.optim.AdamW(ddp.parameters(), lr=args.lr)
    if args.algorithm == "localsgd":
        return model, LocalSGD(model, inner, sync_every=args.sync_every)
    outer = torch.optim.SGD(model.parameters(), lr=args.outer_lr, momentum=0.9, nesterov=True)
    return model, DiLoCo(model, inner, outer, sync_every=args.sync_every, fragments=args.fragments,
                         sync_delay=args.sync_delay)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="diloco", choices=["ddp", "localsgd", "diloco"])
    parser.add_argument("--backend", default="qccl", help="qccl, or gloo for DDP on plain Gloo")
    parser.add_argument("--steps", type=int, default=200, help="inner steps")
    parser.add_argument("--sync-every", type=int, default=50, help="inner steps between syncs (H)")
    parser.add_argument("--fragments", type=int, default=1, help="DiLoCo: fragments synced in turn")
    parser.add_argument("--sync-delay", type=int, default=0, help="DiLoCo: inner steps a sync overlaps")
    parser.add_argument("--lr", type=float, default=3e-3, help="inner (or DDP) AdamW learning rate")
    parser.add_argument("--outer-lr", type=float, default=0.7, help="DiLoCo: outer Nesterov SGD learning rate")
    add_data_arguments(parser)
    args = parser.parse_args()

    use_a_share_of_the_cores()
    dist.init_process_group(args.backend)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(args.seed)
    model = CharTransformer(context=args.context)
    module, stepper = make_stepper(args, model)
    data = batches(load_corpus(), rank, world_size, args.batch_size, args.context, args.seed)

    start, recent = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        tokens, targets = next(data)
        loss = F.cross_entropy(module(tokens).flatten(0, 1), targets.flatten())
        stepper.zero_grad(set_to_none=True)
        loss.backward()
        stepper.step()
        recent = (recent + [loss.item()])[-10:]
        if step % 20 == 0 and rank == 0:
            print(f"step {step:5d}  loss {sum(recent) / len(recent):.4f}", flush=True)
    elapsed = time.perf_counter() - start

    final = torch.tensor([sum(recent) / len(recent)])
    dist.all_reduce(final)  # exact: a 1-element tensor
    final = final.item() / world_size
    tokens = args.steps * args.batch_size * args.context * world_size
    if args.backend == "qccl":
        stats = qccl.stats()
        sent = f"{stats['wire_bytes'] / (tokens / world_size):.2f} bytes sent per token per rank"
        how = f"qccl codec {stats['settings']['codec']}"
    else:  # DDP's buckets: a ring all-reduce sends 2 (n - 1) / n of them per step
        gradient_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        sent = f"{2 * (world_size - 1) / world_size * gradient_bytes * args.steps / (tokens / world_size):.2f} " \
               "bytes sent per token per rank"
        how = args.backend
    if rank == 0:
        print(f"{args.algorithm} ({how}): final loss {final:.4f} (perplexity {math.exp(final):.2f}), "
              f"{tokens / elapsed:.0f} tokens/s, {sent}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
