"""Bad input raises a clear qccl error at the call site (or, for arguments that disagree
across ranks, on every rank), and the group keeps working afterwards."""

import pytest
import torch
import torch.distributed as dist


def expect(error, fragment, fn):
    with pytest.raises(error) as info:
        fn()
    message = str(info.value)
    assert message.startswith("qccl: "), message
    assert fragment in message, message


def qccl_backend():
    """The C++ backend itself, for calls Python's own checks would stop earlier."""
    return dist.group.WORLD._get_backend(torch.device("cpu"))


def rank_bad_local_input(ctx):
    n, me = ctx.size, ctx.rank
    expect(ValueError, "an output has 3 elements, expected 2",
           lambda: dist.all_gather([torch.zeros(3) for _ in range(n)], torch.ones(2)))
    expect(TypeError, "an output has dtype Int",
           lambda: qccl_backend().allgather([[torch.zeros(2, dtype=torch.int32)] * n], [torch.ones(2)]))
    expect(ValueError, f"the output has {2 * n + 1} elements, expected {2 * n}",
           lambda: dist.all_gather_into_tensor(torch.zeros(2 * n + 1), torch.ones(2)))
    expect(TypeError, "cannot apply ReduceOp.BAND to Float",
           lambda: dist.all_reduce(torch.ones(2), op=dist.ReduceOp.BAND))
    expect(TypeError, "cannot apply ReduceOp.AVG to Bool",
           lambda: dist.all_reduce(torch.ones(2, dtype=torch.bool), op=dist.ReduceOp.AVG))
    expect(TypeError, "cannot reduce UInt16",
           lambda: dist.all_reduce(torch.ones(2, dtype=torch.uint16)))
    expect(ValueError, "must be contiguous",
           lambda: dist.broadcast(torch.ones(4, 4).t(), 0))
    expect(ValueError, "must be a dense tensor",
           lambda: dist.all_reduce(torch.ones(2, 2).to_sparse()))
    expect(ValueError, "split sizes add up to",
           lambda: dist.all_to_all_single(torch.zeros(n), torch.ones(n), [1] * n, [2] * n))
    expect(ValueError, "a rank cannot send to or receive from itself",
           lambda: qccl_backend().send([torch.ones(1)], me, 0))
    expect(ValueError, f"peer {n} is not a rank of this group",
           lambda: qccl_backend().send([torch.ones(1)], n, 0))
    if me == 0:  # the root checks its scatter list before anything is sent
        expect(ValueError, f"the input list must hold {n} tensors, got 1",
               lambda: qccl_backend().scatter([torch.zeros(1)], [[torch.ones(1)]], dist.ScatterOptions()))
    expect(ValueError, "the tensor list must not be empty",
           lambda: qccl_backend().allreduce_coalesced([]))
    # Nothing above reached the network: the group is still in step.
    t = torch.ones(2)
    dist.all_reduce(t)
    assert torch.equal(t, torch.full((2,), float(n)))


def test_bad_local_input(world):
    world.run(rank_bad_local_input)


def rank_mismatch_across_ranks(ctx):
    n, me = ctx.size, ctx.rank
    # Rank 0 passes 4 elements, the others 8: Gloo alone would abort the process.
    expect(ValueError, "rank 0 calls ALLREDUCE on 4 Float elements",
           lambda: dist.all_reduce(torch.ones(4 if me == 0 else 8)))
    # Different collectives on different ranks.
    if me == 0:
        expect(ValueError, "the ranks' arguments do not match", lambda: dist.broadcast(torch.ones(4), 0))
    else:
        expect(ValueError, "the ranks' arguments do not match", lambda: dist.all_reduce(torch.ones(4)))
    # all_to_all_single whose splits do not pair up.
    in_splits = [1] * n
    out_splits = [1] * n
    if me == 0:
        in_splits = [2] + [1] * (n - 1)
    expect(ValueError, "rank 0 sends 8 bytes to rank 0, which expects 4 bytes from it",
           lambda: dist.all_to_all_single(torch.zeros(sum(out_splits)), torch.ones(sum(in_splits)),
                                          out_splits, in_splits))
    # The check ran before any data moved, so the group is still usable.
    t = torch.ones(3)
    dist.all_reduce(t)
    assert torch.equal(t, torch.full((3,), float(n)))


def test_mismatch_across_ranks_raises_on_every_rank(world):
    world.run(rank_mismatch_across_ranks)
