"""Small exact calls ride in the cross-rank check (algo/carried_call.h) at any world size:
all_reduce, broadcast, all_gather (both forms) and reduce_scatter_tensor. Each rank
finishes them from what the check brought: sums and products in the order of Gloo's
ring, so float results are Gloo's to the bit at 3 and 4 ranks too, through shared memory
and over sockets alike. Float MIN/MAX keep an exchange of their own."""

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


def rank_other_calls(ctx):
    """broadcast, both all_gathers and reduce_scatter_tensor of a few KiB, per placement:
    which differ from Gloo's results on the same inputs, and how many rode in the check."""
    placements = {"shared memory": None,
                  "sockets": dist.new_group(backend="qccl", pg_options=qccl.Options(force_network=True))}
    n = ctx.size
    found = {}
    for where, group in placements.items():
        differ = []
        dist.all_reduce(torch.ones(2000), group=group)  # makes room for 8000 bytes, as above
        before = _calls_in_check(group)
        for dtype in (torch.float32, torch.bfloat16, torch.int64):
            x = _inputs(ctx.rank, torch.float64, 500, dist.ReduceOp.SUM).to(dtype)
            for root in (0, n - 1):
                mine, ref = x.clone(), x.clone()
                dist.broadcast(mine, root, group=group)
                dist.broadcast(ref, root, group=ctx.gloo)
                differ += [] if torch.equal(mine, ref) else [f"broadcast {dtype} root {root}"]
            mine, ref = torch.empty(n * 500, dtype=dtype), torch.empty(n * 500, dtype=dtype)
            dist.all_gather_into_tensor(mine, x, group=group)
            dist.all_gather_into_tensor(ref, x, group=ctx.gloo)
            differ += [] if torch.equal(mine, ref) else [f"all_gather_into_tensor {dtype}"]
            mine, ref = [torch.empty(500, dtype=dtype) for _ in range(n)], [torch.empty(500, dtype=dtype) for _ in range(n)]
            dist.all_gather(mine, x, group=group)
            dist.all_gather(ref, x, group=ctx.gloo)
            differ += [] if all(map(torch.equal, mine, ref)) else [f"all_gather {dtype}"]
            whole = _inputs(ctx.rank, torch.float64, 1000 // n * n, dist.ReduceOp.SUM).to(dtype)
            mine, ref = torch.empty(1000 // n, dtype=dtype), torch.empty(1000 // n, dtype=dtype)
            dist.reduce_scatter_tensor(mine, whole, group=group)
            dist.reduce_scatter_tensor(ref, whole, group=ctx.gloo)
            differ += [] if torch.equal(mine, ref) else [f"reduce_scatter_tensor {dtype}"]
        found[where] = (differ, _calls_in_check(group) - before)
    return found


@pytest.mark.parametrize("size", [2, 3, 4])
def test_small_broadcasts_gathers_and_reduce_scatters_ride_in_the_check(size):
    # Per dtype: two broadcasts, two all-gathers and a reduce-scatter.
    expected = {where: ([], 3 * 5) for where in ("shared memory", "sockets")}
    assert get_world(size).run(rank_other_calls) == [expected] * size


def rank_chained_broadcast(ctx):
    """A broadcast queued behind an all_reduce of the same tensor sends the sum."""
    wrong = []
    for _ in range(30):
        x = torch.full((16,), float(ctx.rank + 1))
        works = [dist.all_reduce(x, async_op=True), dist.broadcast(x, ctx.size - 1, async_op=True)]
        for work in works:
            work.wait()
        if x.tolist() != [float(ctx.size * (ctx.size + 1) // 2)] * 16:
            wrong.append(x.tolist())
    return wrong[:2]


def test_a_broadcast_queued_behind_an_all_reduce_sends_its_result(world2):
    assert world2.run(rank_chained_broadcast) == [[], []]
