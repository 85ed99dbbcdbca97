"""Every collective and point-to-point op on CUDA tensors, against Gloo on CPU copies of
the same inputs: at world size 1 through NCCL (NCCL refuses two ranks on one GPU), at 2
and 4 ranks on one GPU staged through host memory (QCCL_CUDA_TRANSPORT=gloo). And the
DDP example trains on CUDA tensors with int8 compression."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import qccl
from world import run_in_fresh_world

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and qccl.has_cuda()),
    reason="needs a GPU and the CUDA flavour of qccl",
)

ROOT = Path(__file__).resolve().parents[2]
STAGED = {"QCCL_CUDA_TRANSPORT": "gloo"}


def _inputs(ctx, n=1000, dtype=torch.float32):
    g = torch.Generator().manual_seed(100 + ctx.rank)
    if dtype.is_floating_point:
        return torch.randn(n, generator=g).to(dtype)
    return torch.randint(-50, 50, (n,), generator=g, dtype=dtype)


def _same(got, want):
    assert got.is_cuda, "the result must stay on the GPU"
    assert torch.equal(got.cpu(), want), (got, want)


def rank_every_op(ctx):
    torch.cuda.set_device(0)
    size, rank, gloo = ctx.size, ctx.rank, ctx.gloo
    ops = [dist.ReduceOp.SUM, dist.ReduceOp.MAX, dist.ReduceOp.MIN, dist.ReduceOp.PRODUCT]
    for dtype in (torch.float32, torch.int64):
        for op in ops:
            x = _inputs(ctx, 257, dtype)
            if op == dist.ReduceOp.PRODUCT:
                x = x.sign() + (x == 0).to(dtype)  # +-1: no overflow, exact in any order
            want = x.clone()
            dist.all_reduce(want, op, group=gloo)
            got = x.cuda()
            dist.all_reduce(got, op)
            _same(got, want)
    bits = _inputs(ctx, 64, torch.int32)  # bitwise: NCCL has none, so qccl stages them
    want = bits.clone()
    dist.all_reduce(want, dist.ReduceOp.BXOR, group=gloo)
    got = bits.cuda()
    dist.all_reduce(got, dist.ReduceOp.BXOR)
    _same(got, want)

    x = _inputs(ctx)
    want = x.clone()
    dist.broadcast(want, size - 1, group=gloo)
    got = x.cuda()
    dist.broadcast(got, size - 1)
    _same(got, want)

    want = x.clone()
    dist.reduce(want, 0, group=gloo)
    got = x.cuda()
    dist.reduce(got, 0)
    if rank == 0:
        _same(got, want)

    everyone = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(everyone, x, group=gloo)
    got = [torch.empty_like(x, device="cuda") for _ in range(size)]
    dist.all_gather(got, x.cuda())
    for g, w in zip(got, everyone):
        _same(g, w)

    flat = torch.empty(size * x.numel(), device="cuda")
    dist.all_gather_into_tensor(flat, x.cuda())
    _same(flat, torch.cat(everyone))

    chunks = _inputs(ctx, size * 30)
    want = torch.empty(30)
    dist.reduce_scatter_tensor(want, chunks, group=gloo)
    got = torch.empty(30, device="cuda")
    dist.reduce_scatter_tensor(got, chunks.cuda())
    _same(got, want)

    got = torch.empty(30, device="cuda")
    dist.reduce_scatter(got, [c.cuda() for c in chunks.split(30)])
    _same(got, want)

    # uneven all_to_all_single: rank r sends r + p + 1 elements to peer p
    send_splits = [rank + p + 1 for p in range(size)]
    recv_splits = [p + rank + 1 for p in range(size)]
    source = _inputs(ctx, sum(send_splits))
    want = torch.empty(sum(recv_splits))
    dist.all_to_all_single(want, source, recv_splits, send_splits, group=gloo)
    got = torch.empty(sum(recv_splits), device="cuda")
    dist.all_to_all_single(got, source.cuda(), recv_splits, send_splits)
    _same(got, want)

    outs = [torch.empty(5, device="cuda") for _ in range(size)]
    dist.all_to_all(outs, [torch.full((5,), float(rank * 10 + p), device="cuda") for p in range(size)])
    for p, o in enumerate(outs):
        _same(o, torch.full((5,), float(p * 10 + rank)))

    gathered = [torch.empty_like(x, device="cuda") for _ in range(size)] if rank == 0 else None
    dist.gather(x.cuda(), gathered, dst=0)
    if rank == 0:
        for g, w in zip(gathered, everyone):
            _same(g, w)

    got = torch.empty(4, device="cuda")
    pieces = [torch.full((4,), float(p), device="cuda") for p in range(size)] if rank == 0 else None
    dist.scatter(got, pieces, src=0)
    _same(got, torch.full((4,), float(rank)))

    if size > 1:  # a ring of p2p, then the same as one batch
        right, left = (rank + 1) % size, (rank - 1) % size
        got = torch.empty(100, device="cuda")
        ops = [dist.P2POp(dist.isend, torch.full((100,), float(rank), device="cuda"), right),
               dist.P2POp(dist.irecv, got, left)]
        for work in dist.batch_isend_irecv(ops):
            work.wait()
        _same(got, torch.full((100,), float(left)))
    dist.barrier()


def test_every_op_through_nccl_at_world_size_1():
    run_in_fresh_world(1, rank_every_op)


@pytest.mark.parametrize("size", [2, 4])
def test_every_op_staged_through_host_on_one_gpu(size):
    run_in_fresh_world(size, rank_every_op, env=STAGED)


def rank_compressed_allreduce(ctx):
    """A compressed all-reduce of CUDA tensors gives every rank the same bits, and the
    same bits as qccl's CPU path on the same inputs (the codec kernels match the CPU
    codecs byte for byte)."""
    torch.cuda.set_device(0)
    group = dist.new_group(pg_options=qccl.Options(codec="int8", min_bytes=0))
    x = _inputs(ctx, 100_003)
    on_cpu = x.clone()
    dist.all_reduce(on_cpu, group=group)
    on_gpu = x.cuda()
    dist.all_reduce(on_gpu, group=group)
    _same(on_gpu, on_cpu)
    every = [torch.empty_like(on_cpu) for _ in range(ctx.size)]
    dist.all_gather(every, on_gpu.cpu(), group=ctx.gloo)
    assert all(torch.equal(e, every[0]) for e in every), "ranks must end bit-identical"
    exact = x.double()
    dist.all_reduce(exact, group=ctx.gloo)
    assert (on_cpu.double() - exact).abs().max() < 0.05 * exact.abs().max()
    assert not torch.equal(on_cpu, exact.float()), "int8 must have compressed"
    dist.destroy_process_group(group)


@pytest.mark.parametrize("size,env", [(1, {}), (2, STAGED)])
def test_compressed_allreduce_on_cuda_matches_cpu(size, env):
    run_in_fresh_world(size, rank_compressed_allreduce, env=env)


def rank_compressed_allreduce_with_state(ctx):
    """Error feedback and stochastic rounding on CUDA: step after step, the GPU algorithm
    (residuals on the GPU, seeds from the call counter) gives the CPU path's bits."""
    torch.cuda.set_device(0)
    options = qccl.Options(codec="int4", min_bytes=0, error_feedback=True, stochastic=True)
    cpu_group, gpu_group = dist.new_group(pg_options=options), dist.new_group(pg_options=options)
    x = _inputs(ctx, 50_001)
    on_cpu, on_gpu = torch.empty_like(x), torch.empty_like(x, device="cuda")
    for step in range(3):  # the same tensors every step: each finds its residual again
        on_cpu.copy_(x * (step + 1))
        on_gpu.copy_(on_cpu)
        dist.all_reduce(on_cpu, group=cpu_group)
        dist.all_reduce(on_gpu, group=gpu_group)
        _same(on_gpu, on_cpu)
    dist.destroy_process_group(gpu_group)
    dist.destroy_process_group(cpu_group)


def test_compressed_allreduce_with_error_feedback_on_cuda_matches_cpu():
    run_in_fresh_world(1, rank_compressed_allreduce_with_state)


def rank_compressed_p2p_to_self(ctx):
    """QCCL_P2P_CODEC over NCCL: one GPU can only test it against itself, which NCCL
    allows inside a batch. Each payload arrives as the CPU codec or torch's cast gives
    it; integer and small tensors arrive exactly."""
    from qccl import _C as C

    torch.cuda.set_device(0)
    x = _inputs(ctx, 10_007)
    block = qccl.Options().resolved()["block"]
    want = {
        "fp16": x.half().float(),
        "bf16": x.bfloat16().float(),
        "int8": C.codec_decode("int8", block, C.codec_encode("int8", block, x), x.numel()),
    }
    for codec, expected in want.items():
        group = dist.new_group(pg_options=qccl.Options(p2p_codec=codec))
        sent = [x.cuda(), x.double().cuda(), torch.arange(5000, device="cuda"), x[:7].cuda()]
        got = [torch.full_like(t, -1) for t in sent]
        ops = [dist.P2POp(dist.isend, t, 0, group) for t in sent]
        ops += [dist.P2POp(dist.irecv, t, 0, group) for t in got]
        for work in dist.batch_isend_irecv(ops):
            work.wait()
        _same(got[0], expected)
        _same(got[1], expected.double())  # float64 travels as float32 values, encoded
        _same(got[2], torch.arange(5000))
        _same(got[3], x[:7])
        with pytest.raises(ValueError, match="itself only inside batch_isend_irecv"):
            dist.isend(x.cuda(), 0, group=group)
        dist.destroy_process_group(group)


def test_compressed_p2p_through_nccl_at_world_size_1():
    run_in_fresh_world(1, rank_compressed_p2p_to_self)


def rank_mixed_devices(ctx):
    with pytest.raises(ValueError, match="qccl: all_gather .*same device"):
        dist.all_gather([torch.empty(2) for _ in range(ctx.size)], torch.ones(2, device="cuda"))


def test_mixed_devices_in_one_call_are_refused():
    run_in_fresh_world(1, rank_mixed_devices)


def test_ddp_example_trains_on_cuda_with_int8():
    env = dict(os.environ, QCCL_CODEC="int8", QCCL_MIN_BYTES="0")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1",
           str(ROOT / "examples" / "train_ddp.py"), "--device", "cuda", "--steps", "40"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "on cuda:0" in out.stdout and "final loss" in out.stdout, out.stdout
    compressed = int(out.stdout.split(" allreduced tensors compressed")[0].split("; ")[-1].split(" of ")[0])
    assert compressed > 0, out.stdout
