"""Small exact all-reduces ride in the cross-rank check (algo/local_allreduce.h) at any
world size: each rank reduces the contributions the check brought in the order of Gloo's
ring, so float sums and products are Gloo's to the bit at 3 and 4 ranks too, through
shared memory and over sockets alike. Float MIN/MAX keep an exchange of their own."""

import pytest
import torch
import torch.distributed as dist

import qccl
from conftest import get_world

# (dtype, op, elements): every one fits the check's room for contributions (8 KiB).
RIDING = [(torch.float32, dist.ReduceOp.SUM, 1000), (torch.float64, dist.ReduceOp.SUM, 1),
          (torch.float16, dist.ReduceOp.SUM, 333), (torch.bfloat16, dist.ReduceOp.PRODUCT, 64),
          (torch.float32, dist.ReduceOp.AVG, 7), (torch.complex64, dist.ReduceOp.SUM, 500)]


def _inputs(rank, dtype, n, op):
    """Large values next to tiny ones, so that sums in another order round differently;
    products stay near 1 so that they neither overflow nor vanish."""
    g = torch.Generator().manual_seed(100 + rank)
    if op == dist.ReduceOp.PRODUCT:
        return (1 + torch.randn(n, generator=g) / 8).to(dtype)
    scale = torch.where(torch.rand(n, generator=g) < 0.5, 1e3, 1e-3)
    x = torch.randn(n, generator=g) * scale
    return (x + 1j * torch.randn(n, generator=g) * scale).to(dtype) if dtype.is_complex else x.to(dtype)


def _calls_in_check(group):
    return qccl.stats(group)["calls_in_check"]


def rank_small_sums(ctx):
    """For each placement: which calls differ from Gloo's bits, and how many of the
    riding calls and of the float MIN calls were done in the check."""
    placements = {"shared memory": None,
                  "sockets": dist.new_group(backend="qccl", pg_options=qccl.Options(force_network=True))}
    found = {}
    for where, group in placements.items():
        differ = []
        # The check's room for contributions grows with use: the first call of 4000
        # bytes finds none and makes it (docs/design.md).
        dist.all_reduce(torch.ones(1000), group=group)
        before = _calls_in_check(group)
        for dtype, op, n in RIDING:
            mine = _inputs(ctx.rank, dtype, n, op)
            ref = mine.clone()
            dist.all_reduce(mine, op=op, group=group)
            dist.all_reduce(ref, op=op, group=ctx.gloo)
            if not torch.equal(mine, ref):
                differ.append(f"{dtype} {op} {n}")
        riding = _calls_in_check(group) - before
        before = _calls_in_check(group)
        low = torch.tensor([float(ctx.rank), float("nan") if ctx.rank == 1 else 0.0])
        dist.all_reduce(low, op=dist.ReduceOp.MIN, group=group)
        found[where] = (differ, riding, _calls_in_check(group) - before)
    return found


@pytest.mark.parametrize("size", [3, 4])
def test_small_float_sums_ride_in_the_check_and_are_gloos_bits(size):
    expected = {where: ([], len(RIDING), 0) for where in ("shared memory", "sockets")}
    assert get_world(size).run(rank_small_sums) == [expected] * size


def rank_chained(ctx):
    """Async small all-reduces queued on one tensor, or on views of it, are checked in
    one batch; each must still see the result of the one before (as on a stream), so a
    call's data rides in the check only if no earlier call of the batch touches it.
    Returns the values that differ from the sequential result."""
    n, s = ctx.size, ctx.size * (ctx.size + 1) // 2  # s: the sum of rank + 1 over ranks
    wrong = []
    for _ in range(50):
        x = torch.full((4,), ctx.rank + 1, dtype=torch.int64)
        works = [dist.all_reduce(x, async_op=True) for _ in range(3)]
        y = torch.full((8,), ctx.rank + 1.0)
        works += [dist.all_reduce(y, async_op=True), dist.all_reduce(y[:4], async_op=True)]
        for work in works:
            work.wait()
        if x.tolist() != [s * n * n] * 4:
            wrong.append(("x", x.tolist()))
        if y.tolist() != [float(s * n)] * 4 + [float(s)] * 4:
            wrong.append(("y", y.tolist()))
    return wrong[:3]


@pytest.mark.parametrize("size", [2, 3])
def test_calls_queued_on_one_tensor_see_each_others_results(size):
    assert get_world(size).run(rank_chained) == [[]] * size
