"""all_reduce, all_reduce_coalesced, reduce, reduce_scatter(_tensor)(_coalesced) on qccl,
checked against a 64-bit reference and, where Gloo can run the same call, bit for bit
against Gloo."""

import pytest
import torch
import torch.distributed as dist

from reference import (
    DTYPES,
    GLOO_DTYPES,
    assert_matches,
    make_input,
    reduce_op,
    reference_reduce,
    valid_ops,
)

BITWISE_WITH_GLOO = {"SUM", "PRODUCT", "MIN", "MAX", "BAND", "BOR", "BXOR"}


def rank_all_reduce(ctx, async_op):
    for dtype in DTYPES:
        for name in valid_ops(dtype):
            inputs = [make_input(r, dtype) for r in range(ctx.size)]
            tensor = inputs[ctx.rank].clone()
            work = dist.all_reduce(tensor, op=reduce_op(name), async_op=async_op)
            if async_op:
                future = work.get_future()
                (value,) = future.wait()
                assert value.data_ptr() == tensor.data_ptr(), "future must hold the tensor"
            assert_matches(tensor, reference_reduce(inputs, name), f"all_reduce {dtype} {name}")
            if dtype in GLOO_DTYPES and name in BITWISE_WITH_GLOO:
                by_gloo = inputs[ctx.rank].clone()
                dist.all_reduce(by_gloo, op=reduce_op(name), group=ctx.gloo)
                assert torch.equal(tensor, by_gloo), f"all_reduce {dtype} {name} differs from Gloo"


@pytest.mark.parametrize("async_op", [False, True], ids=["sync", "async"])
def test_all_reduce_every_dtype_and_op(world, async_op):
    world.run(rank_all_reduce, async_op)


def rank_all_reduce_coalesced(ctx):
    for dtype in [torch.float32, torch.int16, torch.bfloat16]:
        for name in ["SUM", "AVG", "MAX"]:
            inputs = [[make_input(r, dtype, numel=5 + i, seed=i) for i in range(3)] for r in range(ctx.size)]
            tensors = [t.clone() for t in inputs[ctx.rank]]
            dist.all_reduce_coalesced(tensors, op=reduce_op(name))
            for i, t in enumerate(tensors):
                expected = reference_reduce([inputs[r][i] for r in range(ctx.size)], name)
                assert_matches(t, expected, f"all_reduce_coalesced #{i} {dtype} {name}")
    # The _coalescing_manager fast path hands the backend one list, here of mixed dtypes.
    dtypes = [torch.float64, torch.int32, torch.float64, torch.float16]
    inputs = [[make_input(r, d, numel=3 + i, seed=i) for i, d in enumerate(dtypes)] for r in range(ctx.size)]
    tensors = [t.clone() for t in inputs[ctx.rank]]
    with dist._coalescing_manager(async_ops=True) as cm:
        for t in tensors:
            dist.all_reduce(t)
    cm.wait()
    for i, t in enumerate(tensors):
        expected = reference_reduce([inputs[r][i] for r in range(ctx.size)], "SUM")
        assert_matches(t, expected, f"coalescing manager #{i}")


def test_all_reduce_coalesced_mixed_dtypes(world):
    world.run(rank_all_reduce_coalesced)


def rank_reduce(ctx):
    for root in {0, ctx.size - 1}:
        for dtype in DTYPES:
            for name in ["SUM", "MAX", "AVG" if dtype is not torch.bool else "MIN"]:
                inputs = [make_input(r, dtype) for r in range(ctx.size)]
                tensor = inputs[ctx.rank].clone()
                dist.reduce(tensor, dst=root, op=reduce_op(name))
                if ctx.rank == root:
                    assert_matches(tensor, reference_reduce(inputs, name), f"reduce {dtype} {name}")
                else:
                    assert torch.equal(tensor, inputs[ctx.rank]), "reduce must not touch non-root tensors"


def test_reduce(world):
    world.run(rank_reduce)


def rank_reduce_scatter(ctx):
    n = ctx.size
    for dtype in DTYPES:
        for name in ["SUM", "MAX"] + (["AVG", "PREMUL_SUM"] if dtype.is_floating_point else []):
            # List form: rank r's j-th input goes to rank j.
            lists = [[make_input(r, dtype, numel=6, seed=j) for j in range(n)] for r in range(n)]
            out = torch.empty(6, dtype=dtype)
            dist.reduce_scatter(out, [t.clone() for t in lists[ctx.rank]], op=reduce_op(name))
            expected = reference_reduce([lists[r][ctx.rank] for r in range(n)], name)
            assert_matches(out, expected, f"reduce_scatter {dtype} {name}")

            # Tensor form.
            flats = [make_input(r, dtype, numel=4 * n) for r in range(n)]
            mine = flats[ctx.rank].clone()
            out = torch.empty(4, dtype=dtype)
            dist.reduce_scatter_tensor(out, mine, op=reduce_op(name))
            assert torch.equal(mine, flats[ctx.rank]), "reduce_scatter_tensor must not modify its input"
            expected = reference_reduce(flats, name).view(n, 4)[ctx.rank]
            assert_matches(out, expected, f"reduce_scatter_tensor {dtype} {name}")


def test_reduce_scatter(world):
    world.run(rank_reduce_scatter)


def rank_reduce_scatter_tensor_coalesced(ctx):
    n = ctx.size
    specs = [(torch.float32, 3), (torch.int32, 5), (torch.bfloat16, 2)]
    flats = [[make_input(r, d, numel=k * n, seed=i) for i, (d, k) in enumerate(specs)] for r in range(n)]
    outs = [torch.empty(k, dtype=d) for d, k in specs]
    with dist._coalescing_manager():
        for out, flat in zip(outs, flats[ctx.rank]):
            dist.reduce_scatter_tensor(out, flat.clone())
    for i, (out, (d, k)) in enumerate(zip(outs, specs)):
        expected = reference_reduce([flats[r][i] for r in range(n)], "SUM").view(n, k)[ctx.rank]
        assert_matches(out, expected, f"reduce_scatter_tensor_coalesced #{i}")


def test_reduce_scatter_tensor_coalesced(world):
    world.run(rank_reduce_scatter_tensor_coalesced)
