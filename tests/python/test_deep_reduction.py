"""Large exact all-reduces and reduce-scatters over sockets take qccl's deep pipeline
(algo/deep_reduction.h): their results must be Gloo's to the bit at 2, 3 and 4 ranks,
whatever the size, dtype and op, alone, fused, or several in flight."""

import pytest
import torch
import torch.distributed as dist

from reference import assert_matches, reference_reduce
from world import run_in_fresh_world

MiB = 1 << 20
SOCKETS = {"QCCL_FORCE_NETWORK": "1"}


def spread_input(rank, numel, dtype, seed=0):
    """Values over six orders of magnitude, so the order of a sum changes its bits."""
    g = torch.Generator().manual_seed(7919 * seed + rank)
    scale = 10.0 ** torch.randint(-3, 4, (numel,), generator=g, dtype=torch.float64)
    return (torch.randn(numel, generator=g, dtype=torch.float64) * scale).to(dtype)


# (dtype, op, elements): from the deep path's threshold (1 MiB) to several chunks of
# shards that do not divide evenly, in types whose sums Gloo computes in its own way.
CASES = [
    (torch.float32, "SUM", 3 * MiB // 4 + 7),
    (torch.float16, "SUM", MiB // 2),
    (torch.bfloat16, "SUM", MiB + 3),
    (torch.float64, "PRODUCT", MiB // 8 + 5),
    (torch.int32, "MAX", MiB // 4 + 1),
    (torch.int8, "SUM", 2 * MiB + 1),
]


def case_inputs(ranks, dtype, name, numel, seed):
    if name == "PRODUCT":
        return [(1 + 0.01 * spread_input(r, numel, torch.float64, seed).clamp(-1, 1)).to(dtype) for r in range(ranks)]
    if dtype.is_floating_point:
        return [spread_input(r, numel, dtype, seed) for r in range(ranks)]
    return [torch.randint(-100, 100, (numel,), generator=torch.Generator().manual_seed(seed + r)).to(dtype)
            for r in range(ranks)]


def rank_deep_all_reduce(ctx):
    for i, (dtype, name, numel) in enumerate(CASES):
        inputs = case_inputs(ctx.size, dtype, name, numel, seed=i)
        op = getattr(dist.ReduceOp, name)
        tensor = inputs[ctx.rank].clone()
        dist.all_reduce(tensor, op=op)
        by_gloo = inputs[ctx.rank].clone()
        dist.all_reduce(by_gloo, op=op, group=ctx.gloo)
        assert torch.equal(tensor, by_gloo), f"{dtype} {name} x{numel}: differs from Gloo"
        if dtype is torch.float32 and ctx.size > 2:
            # The data tells orders apart: a plain rank-order sum is not Gloo's.
            rank_order = inputs[0].clone()
            for t in inputs[1:]:
                rank_order += t
            assert not torch.equal(rank_order, by_gloo), "inputs too tame to check the order"

    # AVG (a sum, then a division, reduce_lowering.h) against float64 arithmetic.
    inputs = [torch.randn(MiB // 4, generator=torch.Generator().manual_seed(r)) for r in range(ctx.size)]
    tensor = inputs[ctx.rank].clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.AVG)
    assert_matches(tensor, reference_reduce(inputs, "AVG"), "deep all_reduce AVG")


def rank_deep_reduce_scatter(ctx):
    for i, (dtype, name, numel) in enumerate(CASES):
        block = numel // ctx.size + 1  # inputs of ranks x block elements
        inputs = case_inputs(ctx.size, dtype, name, block * ctx.size, seed=i)
        op = getattr(dist.ReduceOp, name)
        output = torch.empty(block, dtype=dtype)
        mine = inputs[ctx.rank].clone()
        dist.reduce_scatter_tensor(output, mine, op=op)
        assert torch.equal(mine, inputs[ctx.rank]), "reduce_scatter changed its input"
        by_gloo = torch.empty(block, dtype=dtype)
        dist.reduce_scatter_tensor(by_gloo, inputs[ctx.rank].clone(), op=op, group=ctx.gloo)
        assert torch.equal(output, by_gloo), f"reduce_scatter {dtype} {name} x{block}: differs from Gloo"

    # The list form reduces its rows as one input, as reduce_scatter_tensor does (Gloo's own
    # list form sums in another order at 3 ranks and more: it is not the reference).
    block = MiB // 4
    rows = [[spread_input(r, block, torch.float32, seed=100 + k) for k in range(ctx.size)] for r in range(ctx.size)]
    output = torch.empty(block)
    dist.reduce_scatter(output, [t.clone() for t in rows[ctx.rank]])
    by_gloo = torch.empty(block)
    dist.reduce_scatter_tensor(by_gloo, torch.cat(rows[ctx.rank]), group=ctx.gloo)
    assert torch.equal(output, by_gloo), "reduce_scatter (list) differs from Gloo's reduce_scatter_tensor"
    inputs = [torch.randn(block * ctx.size, generator=torch.Generator().manual_seed(r)) for r in range(ctx.size)]
    output = torch.empty(block)
    dist.reduce_scatter_tensor(output, inputs[ctx.rank].clone(), op=dist.ReduceOp.AVG)
    expected = reference_reduce(inputs, "AVG").narrow(0, ctx.rank * block, block)
    assert_matches(output, expected, "deep reduce_scatter AVG")


def rank_fused_and_in_flight(ctx):
    # all_reduce_coalesced fuses its tensors into one buffer, as Gloo's does.
    parts = [[spread_input(r, n, torch.float32, seed=n) for n in (300_000, 200_001)] for r in range(ctx.size)]
    tensors = [t.clone() for t in parts[ctx.rank]]
    dist.all_reduce_coalesced(tensors)
    by_gloo = [t.clone() for t in parts[ctx.rank]]
    dist.all_reduce_coalesced(by_gloo, group=ctx.gloo)
    for mine, gloo in zip(tensors, by_gloo):
        assert torch.equal(mine, gloo), "all_reduce_coalesced differs from Gloo"

    # Several large calls in flight, then waited for in reverse.
    inputs = [[spread_input(r, MiB // 2 + k, torch.float32, seed=k) for k in range(4)] for r in range(ctx.size)]
    tensors = [t.clone() for t in inputs[ctx.rank]]
    works = [dist.all_reduce(t, async_op=True) for t in tensors]
    for work in reversed(works):
        work.wait()
    for k, t in enumerate(tensors):
        by_gloo = inputs[ctx.rank][k].clone()
        dist.all_reduce(by_gloo, group=ctx.gloo)
        assert torch.equal(t, by_gloo), f"async all_reduce #{k} differs from Gloo"


def rank_deep_reductions(ctx):
    rank_deep_all_reduce(ctx)
    rank_deep_reduce_scatter(ctx)


@pytest.mark.parametrize("size", [2, 3, 4], ids=["2ranks", "3ranks", "4ranks"])
def test_deep_reductions_are_gloos_to_the_bit(size):
    run_in_fresh_world(size, rank_deep_reductions, env=SOCKETS)


def test_fused_and_overlapping_deep_all_reduces_are_gloos():
    run_in_fresh_world(3, rank_fused_and_in_flight, env=SOCKETS)
