"""Data-parallel training of a small character-level transformer language model.

An ordinary DDP script: nothing in it is specific to qccl except the --backend flag.
The model and the data are char_lm.py's (Python's own documentation, so nothing is
downloaded).

    torchrun --nproc-per-node 2 examples/train_ddp.py --backend qccl
    torchrun --nproc-per-node 2 examples/train_ddp.py --backend gloo
    torchrun --nproc-per-node 1 examples/train_ddp.py --device cuda     # one rank per GPU
"""

import argparse
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from char_lm import CharTransformer, add_data_arguments, batches, load_corpus, use_a_share_of_the_cores


def train(model, group, steps, batch_size, context, seed, lr=3e-3, log_every=0, device="cpu"):
    """Trains `model` with DDP over `group` on `device`; returns the mean loss of the last steps."""
    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    device = torch.device(device)
    model = model.to(device)
    ddp = DDP(model, process_group=group, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=lr)
    data = batches(load_corpus(), rank, world_size, batch_size, context, seed)
    recent = []
    for step in range(1, steps + 1):
        tokens, targets = (t.to(device) for t in next(data))
        loss = F.cross_entropy(ddp(tokens).flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent = (recent + [loss.item()])[-10:]
        if log_every and step % log_every == 0 and rank == 0:
            print(f"step {step:5d}  loss {sum(recent) / len(recent):.4f}", flush=True)
    return sum(recent) / len(recent)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="qccl", help="torch.distributed backend, e.g. qccl or gloo")
    parser.add_argument("--steps", type=int, default=200)
    add_data_arguments(parser)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda: one GPU per rank (LOCAL_RANK); qccl sends CUDA tensors through NCCL")
    args = parser.parse_args()

    use_a_share_of_the_cores()
    device = "cpu"
    if args.device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    dist.init_process_group(args.backend)  # rank, world size and rendezvous from torchrun
    rank, world_size = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(args.seed)  # same initial weights on every rank
    model = CharTransformer(context=args.context)
    if rank == 0:
        params = sum(p.numel() for p in model.parameters())
        print(f"backend {args.backend}, {world_size} ranks on {device}, {params / 1e6:.2f}M parameters", flush=True)

    start = time.perf_counter()
    final = train(model, None, args.steps, args.batch_size, args.context, args.seed, log_every=20, device=device)
    elapsed = time.perf_counter() - start
    samples = args.steps * args.batch_size * world_size
    if rank == 0:
        print(f"final loss {final:.6f} (perplexity {math.exp(final):.2f})")
        print(f"{samples / elapsed:.1f} samples/s over {args.steps} steps ({elapsed:.1f} s)")
        if "qccl" in args.backend:
            report_qccl_traffic()
    dist.destroy_process_group()


def report_qccl_traffic():
    """What qccl's codec (QCCL_CODEC) saved: the only qccl-specific lines of this script."""
    import qccl

    s = qccl.stats()
    if s["compressed_tensors"] == 0:
        # Exact calls: nothing saved, and their time on the network is not measured apart.
        print(f"qccl codec {s['settings']['codec']}: sent {s['wire_bytes'] / 1e6:.1f} MB, "
              f"every allreduced tensor exact")
        return
    print(
        f"qccl codec {s['settings']['codec']}: sent {s['wire_bytes'] / 1e6:.1f} MB instead of "
        f"{s['exact_wire_bytes'] / 1e6:.1f} MB ({s['compression_ratio']:.2f}x fewer bytes); "
        f"{s['compressed_tensors']} of {s['tensors']} allreduced tensors compressed; "
        f"encode {s['encode_seconds']:.2f} s, network {s['communicate_seconds']:.2f} s "
        f"(the compressed tensors'), decode {s['decode_seconds']:.2f} s"
    )


if __name__ == "__main__":
    main()
