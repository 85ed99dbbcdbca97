"""Collectives on CPU views that are not contiguous (transposes, slices with a step) give
Gloo's results and write them into the view, leaving the rest of its base untouched.

The reference is Gloo on contiguous copies of the same values: Gloo itself accepts such
views for most collectives (and for those it refuses, the contiguous result is what the
view must hold)."""

import pytest
import torch
import torch.distributed as dist

FILL = -7.0  # the base tensors' elements outside the views; must stay as they are


def view(ctx, rows, salt):
    """A rows x 3 view taking every other column of a rows x 6 base."""
    base = torch.full((rows, 6), FILL)
    v = base[:, ::2]
    v.copy_(torch.arange(rows * 3, dtype=torch.float32).reshape(rows, 3) + 100 * ctx.rank + salt)
    assert not v.is_contiguous()
    return base, v


def views(ctx, count, rows, salt=0):
    pairs = [view(ctx, rows, salt + 10 * i) for i in range(count)]
    return [b for b, _ in pairs], [v for _, v in pairs]


def untouched(base):
    return bool((base[:, 1::2] == FILL).all())


def qccl_backend():
    return dist.group.WORLD._get_backend(torch.device("cpu"))


def copies(tensors):
    return [t.clone(memory_format=torch.contiguous_format) for t in tensors]


def run(ctx, op):
    """Runs `op` on strided views through qccl and on contiguous copies through Gloo;
    returns (qccl's outputs, Gloo's outputs, bases of the outputs)."""
    n, me = ctx.size, ctx.rank
    g = ctx.gloo
    if op == "all_reduce":
        bases, (t,) = views(ctx, 1, 4)
        (ref,) = copies([t])
        dist.all_reduce(ref, group=g)
        dist.all_reduce(t)
        return [t], [ref], bases
    if op == "all_reduce_coalesced":
        bases, ts = views(ctx, 2, 4)
        refs = copies(ts)
        for r in refs:
            dist.all_reduce(r, group=g)
        dist.all_reduce_coalesced(ts)
        return ts, refs, bases
    if op == "broadcast":
        bases, (t,) = views(ctx, 1, 4)
        (ref,) = copies([t])
        dist.broadcast(ref, 0, group=g)
        dist.broadcast(t, 0)
        return [t], [ref], bases
    if op == "reduce":
        bases, (t,) = views(ctx, 1, 4)
        (ref,) = copies([t])
        dist.reduce(ref, 0, group=g)
        dist.reduce(t, 0)
        return ([t], [ref], bases) if me == 0 else ([], [], bases)
    if op == "all_gather":
        _, (x,) = views(ctx, 1, 4)
        bases, outs = views(ctx, n, 4, salt=1000)
        refs = copies(outs)
        dist.all_gather(refs, x.contiguous(), group=g)
        dist.all_gather(outs, x)
        return outs, refs, bases
    if op == "all_gather_into_tensor":
        _, (x,) = views(ctx, 1, 4)
        base, out = view(ctx, 4 * n, 1000)
        ref = torch.empty(4 * n, 3)
        dist.all_gather_into_tensor(ref, x.contiguous(), group=g)
        dist.all_gather_into_tensor(out, x)
        return [out], [ref], [base]
    if op == "gather":
        _, (x,) = views(ctx, 1, 4)
        bases, outs = views(ctx, n, 4, salt=1000) if me == 0 else ([], None)
        refs = copies(outs) if me == 0 else None
        dist.gather(x.contiguous(), refs, 0, group=g)
        dist.gather(x, outs, 0)
        return (outs, refs, bases) if me == 0 else ([], [], [])
    if op == "scatter":
        _, ins = views(ctx, n, 4, salt=500) if me == 0 else (None, None)
        bases, (out,) = views(ctx, 1, 4)
        ref = torch.empty(4, 3)
        dist.scatter(ref, copies(ins) if me == 0 else None, 0, group=g)
        dist.scatter(out, ins, 0)
        return [out], [ref], bases
    if op == "reduce_scatter":
        _, ins = views(ctx, n, 4, salt=500)
        bases, (out,) = views(ctx, 1, 4)
        ref = torch.empty(4, 3)
        dist.reduce_scatter(ref, copies(ins), group=g)
        dist.reduce_scatter(out, ins)
        return [out], [ref], bases
    if op == "reduce_scatter_tensor":
        _, (x,) = views(ctx, 1, 4 * n, salt=500)
        bases, (out,) = views(ctx, 1, 4)
        ref = torch.empty(4, 3)
        dist.reduce_scatter_tensor(ref, x.contiguous(), group=g)
        dist.reduce_scatter_tensor(out, x)
        return [out], [ref], bases
    if op == "all_to_all":
        _, ins = views(ctx, n, 4, salt=500)
        bases, outs = views(ctx, n, 4, salt=1000)
        refs = copies(outs)
        dist.all_to_all(refs, copies(ins), group=g)
        dist.all_to_all(outs, ins)
        return outs, refs, bases
    if op == "all_to_all_single":  # torch's Python refuses views here; qccl's backend takes them
        _, (x,) = views(ctx, 1, 2 * n, salt=500)
        base, out = view(ctx, 2 * n, 1000)
        ref = torch.empty(2 * n, 3)
        dist.all_to_all_single(ref, x.contiguous(), group=g)
        qccl_backend().alltoall_base(out, x, [], [], dist.AllToAllOptions()).wait()
        return [out], [ref], [base]
    raise AssertionError(op)


OPS = ["all_reduce", "all_reduce_coalesced", "broadcast", "reduce", "all_gather", "all_gather_into_tensor",
       "gather", "scatter", "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single"]


def rank_strided(ctx, op):
    got, expected, bases = run(ctx, op)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert torch.equal(g, e), (op, g, e)
    assert all(untouched(b) for b in bases), op


@pytest.mark.parametrize("op", OPS)
def test_strided_views_as_gloo(world, op):
    world.run(rank_strided, op)


def rank_refused(ctx):
    peer = (ctx.rank + 1) % ctx.size
    # Point-to-point needs contiguous tensors, as with Gloo and NCCL.
    with pytest.raises(ValueError, match="qccl: send on rank .* must be contiguous"):
        qccl_backend().send([torch.ones(4, 4).t()], peer, 0)
    # A view whose elements share memory cannot receive a result.
    with pytest.raises(ValueError, match="share memory"):
        dist.all_reduce(torch.ones(1).expand(4))
    tensor = torch.ones(3)
    dist.all_reduce(tensor)
    assert torch.equal(tensor, torch.full((3,), float(ctx.size)))


def test_what_views_cannot_do(world2):
    world2.run(rank_refused)
