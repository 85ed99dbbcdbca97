"""Pipeline-parallel (and hybrid pipeline x data-parallel) training of a character-level
transformer with torch.distributed.pipelining.

An ordinary pipelining script: nothing in it is specific to qccl except the --backend
flag. The model's layers are cut into stages; activations flow forward and their
gradients backward between ranks through send/recv, which qccl can compress
(QCCL_P2P_CODEC=bf16). With --dp 2 the ranks form a (dp x pp) mesh: each data-parallel
replica is a pipeline, and each stage averages its gradients with the same stage of the
other replicas through one all-reduce per step (compressed when QCCL_CODEC is set).

    torchrun --nproc-per-node 2 examples/train_pipeline.py --backend qccl --schedule 1f1b
    QCCL_P2P_CODEC=bf16 torchrun --nproc-per-node 4 examples/train_pipeline.py --schedule interleaved
    torchrun --nproc-per-node 4 examples/train_pipeline.py --dp 2            # 2 stages x 2 replicas
    torchrun --nproc-per-node 2 examples/train_pipeline.py --backend gloo    # the reference
"""

import argparse
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B

from char_lm import batches, load_corpus

SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B, "interleaved": ScheduleInterleaved1F1B}


class StageModule(nn.Module):
    """One pipeline stage of a GPT-style decoder over bytes: the first stage embeds the
    tokens, every stage runs its share of the layers, the last one predicts the next byte."""

    def __init__(self, first, last, layers, width=128, heads=4, context=64, vocab=256):
        super().__init__()
        self.first, self.last = first, last
        if first:
            self.embed = nn.Embedding(vocab, width)
            self.position = nn.Parameter(torch.zeros(context, width))
        block = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        if last:
            self.norm = nn.LayerNorm(width)
            self.head = nn.Linear(width, vocab)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(context))

    def forward(self, x):
        if self.first:
            x = self.embed(x) + self.position[: x.shape[1]]
        n = x.shape[1]
        x = self.blocks(x, mask=self.causal[:n, :n], is_causal=True)
        return self.head(self.norm(x)) if self.last else x


def build_stages(stage_indices, num_stages, layers_per_stage, seed, **shape):
    """The modules of `stage_indices`; stage i's weights depend only on (seed, i), so every
    backend and every rank layout trains the same model."""
    modules = []
    for i in stage_indices:
        torch.manual_seed(seed * 1000 + i)
        modules.append(StageModule(i == 0, i == num_stages - 1, layers_per_stage, **shape))
    return modules


def next_token_loss(logits, targets):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def train(
    pp_group,
    dp_group=None,
    schedule="1f1b",
    steps=20,
    batch_size=16,
    microbatches=4,
    layers_per_stage=1,
    seed=0,
    lr=3e-3,
    log_every=0,
    step_seconds=None,
    **shape,
):
    """Trains one pipeline over `pp_group` (averaging gradients over `dp_group`, if any).
    Returns (losses per step, parameters of this rank's stages); the losses are known on
    the rank holding the last stage and are None elsewhere. `shape` (width, heads,
    context) sizes the model; `step_seconds`, a list, receives each step's duration."""
    pp_rank, pp_size = dist.get_rank(pp_group), dist.get_world_size(pp_group)
    per_rank = 2 if schedule == "interleaved" else 1
    num_stages = pp_size * per_rank
    indices = [pp_rank + k * pp_size for k in range(per_rank)]
    modules = build_stages(indices, num_stages, layers_per_stage, seed, **shape)
    device = torch.device("cpu")
    stages = [PipelineStage(m, i, num_stages, device, group=pp_group) for m, i in zip(modules, indices)]
    kind = SCHEDULES[schedule]
    if schedule == "interleaved":
        pipe = kind(stages, n_microbatches=microbatches, loss_fn=next_token_loss)
    else:
        pipe = kind(stages[0], n_microbatches=microbatches, loss_fn=next_token_loss)
    params = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr)
    replica = dist.get_rank(dp_group) if dp_group is not None else 0
    data = batches(load_corpus(), replica, 1, batch_size, modules[0].causal.shape[0], seed)

    has_first = 0 in indices
    has_last = num_stages - 1 in indices
    history = []
    for step in range(1, steps + 1):
        start = time.perf_counter()
        tokens, targets = next(data)  # every stage of a replica draws the same batch
        optimizer.zero_grad(set_to_none=True)
        losses = [] if has_last else None
        args = (tokens,) if has_first else ()
        pipe.step(*args, target=targets if has_last else None, losses=losses)
        if dp_group is not None:
            average_gradients(params, dp_group)
        optimizer.step()
        if step_seconds is not None:
            step_seconds.append(time.perf_counter() - start)
        if has_last:
            history.append(torch.stack(losses).mean().item())
            if log_every and step % log_every == 0:
                print(f"step {step:5d}  loss {sum(history[-10:]) / len(history[-10:]):.4f}", flush=True)
    return (history if has_last else None), [p.detach().clone() for p in params]


def average_gradients(params, dp_group):
    """One all-reduce of all of this stage's gradients (what DDP does per bucket)."""
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=dp_group)
    flat /= dist.get_world_size(dp_group)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="qccl", help="torch.distributed backend, e.g. qccl or gloo")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="1f1b")
    parser.add_argument("--dp", type=int, default=1, help="data-parallel replicas (world = dp x stages)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--microbatches", type=int, default=4)
    parser.add_argument("--layers-per-stage", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    dist.init_process_group(args.backend)  # rank, world size and rendezvous from torchrun
    world = dist.get_world_size()
    if world % args.dp:
        raise SystemExit(f"--dp {args.dp} does not divide the {world} ranks")
    if args.dp > 1:
        mesh = init_device_mesh("cpu", (args.dp, world // args.dp), mesh_dim_names=("dp", "pp"))
        pp_group, dp_group = mesh.get_group("pp"), mesh.get_group("dp")
    else:
        pp_group, dp_group = dist.group.WORLD, None

    first_replica = dp_group is None or dist.get_rank(dp_group) == 0
    start = time.perf_counter()
    history, _ = train(
        pp_group, dp_group, args.schedule, args.steps, args.batch_size, args.microbatches,
        args.layers_per_stage, args.seed, log_every=10 if first_replica else 0,
    )
    elapsed = time.perf_counter() - start
    if history is not None and first_replica:
        samples = args.steps * args.batch_size * args.dp
        codec = os.environ.get("QCCL_P2P_CODEC", "none") if "qccl" in args.backend else "-"
        print(
            f"backend {args.backend}, schedule {args.schedule}, pipelines of {world // args.dp} ranks x "
            f"{args.dp} replicas, p2p codec {codec}: final loss {history[-1]:.6f} "
            f"(perplexity {math.exp(history[-1]):.2f}), {samples / elapsed:.1f} samples/s"
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
