"""Error and wire bytes of qccl's compressed allreduce, per codec, against float64.

    torchrun --nproc-per-node 2 benchmarks/codec_error.py [--elements 4194304]
    torchrun --nproc-per-node 4 benchmarks/codec_error.py

Every rank reduces its own Gaussian float32 tensor (SUM). Reported by rank 0: the
relative L2 error of the result against the float64 sum, the largest element error in
units of the result's RMS, whether all ranks hold identical bits, and the compression
ratio from qccl.stats (bytes an exact allreduce sends / bytes sent).
"""

import argparse

import torch
import torch.distributed as dist

import qccl

VARIANTS = [
    ("fp16", {}),
    ("bf16", {}),
    ("int8", {}),
    ("int8", {"stochastic": True}),
    ("int4", {}),
    ("int4", {"stochastic": True}),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1 << 22)
    parser.add_argument("--block", type=int, default=256)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    inputs = [torch.randn(args.elements, generator=torch.Generator().manual_seed(r)) for r in range(size)]
    reference = sum(x.double() for x in inputs)
    if rank == 0:
        print(f"{size} ranks, {args.elements} float32 elements, block {args.block}, Gaussian data")
        print(f"{'codec':>6} {'options':>18} {'rel. L2 error':>14} {'max err/RMS':>12} {'identical':>10} {'ratio':>6}")
    for codec, options in VARIANTS:
        group = dist.new_group(
            backend="qccl", pg_options=qccl.Options(codec=codec, block=args.block, **options)
        )
        tensor = inputs[rank].clone()
        dist.all_reduce(tensor, group=group)
        error = tensor.double() - reference
        relative = (error.norm() / reference.norm()).item()
        worst = (error.abs().max() / reference.pow(2).mean().sqrt()).item()
        copies = [torch.empty_like(tensor) for _ in range(size)]
        dist.all_gather(copies, tensor)
        identical = all(torch.equal(c, copies[0]) for c in copies)
        ratio = qccl.stats(group)["compression_ratio"]
        if rank == 0:
            label = ",".join(options) or "-"
            print(f"{codec:>6} {label:>18} {relative:14.2e} {worst:12.3f} {str(identical):>10} {ratio:6.2f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
