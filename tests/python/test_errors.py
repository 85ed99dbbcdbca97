"""Bad input raises a clear qccl error at the call site (or, for arguments that disagree
across ranks, on every rank), and the ranks stay in step afterwards: either the group
keeps pairing every rank's calls correctly, or every later collective raises. Never a
call that pairs with another rank's next one, never a call that returns without running."""

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
    expect(ValueError, "must be a dense tensor",  # all_reduce takes sparse tensors (test_sparse.py)
           lambda: qccl_backend().broadcast([torch.ones(2, 2).to_sparse()], dist.BroadcastOptions()))
    expect(ValueError, "split sizes add up to",
           lambda: dist.all_to_all_single(torch.zeros(n), torch.ones(n), [1] * n, [2] * n))
    expect(ValueError, "a rank cannot send to or receive from itself",
           lambda: qccl_backend().send([torch.ones(1)], me, 0))
    expect(ValueError, f"peer {n} is not a rank of this group",
           lambda: qccl_backend().send([torch.ones(1)], n, 0))
    expect(ValueError, "the tensor list must not be empty",
           lambda: qccl_backend().allreduce_coalesced([]))
    # Every rank raised for the same calls: the group is still in step.
    t = torch.ones(2)
    dist.all_reduce(t)
    assert torch.equal(t, torch.full((2,), float(n)))


def test_bad_local_input(world):
    world.run(rank_bad_local_input)


def step_values(ctx, step):
    """Rank r's tensor at `step`, and the sum over the ranks, computed in float64."""
    value = lambda rank: float(10 * step + rank + 1)
    expected = sum(value(rank) for rank in range(ctx.size))
    return torch.full((4,), value(ctx.rank)), torch.full((4,), expected, dtype=torch.float64).float()


def check_all_reduces_pair_up(ctx, group=None):
    """Three all-reduces of equal shape and different values: a shifted pairing would mix them."""
    for step in range(3):
        tensor, expected = step_values(ctx, step)
        dist.all_reduce(tensor, group=group)
        assert torch.equal(tensor, expected), (step, tensor, expected)


def rank_root_only_error(ctx, op):
    # Only the root's list is wrong, so only the root's own checks can see it.
    n, me = ctx.size, ctx.rank
    others = f"rank 0 raised for this call before taking part"
    if op == "gather":
        outputs = [[torch.zeros(2)]] if me == 0 else []  # the root's list is one short
        call = lambda: qccl_backend().gather(outputs, [torch.ones(2)], dist.GatherOptions())
        expect(ValueError, "the output list must hold" if me == 0 else others, lambda: call().wait())
    else:
        inputs = [[torch.ones(2)]] if me == 0 else []
        call = lambda: qccl_backend().scatter([torch.zeros(2)], inputs, dist.ScatterOptions())
        expect(ValueError, "the input list must hold" if me == 0 else others, lambda: call().wait())
    check_all_reduces_pair_up(ctx)


@pytest.mark.parametrize("op", ["gather", "scatter"])
def test_root_only_error_keeps_the_ranks_in_step(world, op):
    world.run(rank_root_only_error, op)


def rank_failed_batch(ctx, how):
    peer = (ctx.rank + 1) % ctx.size
    if how == "self_as_peer":  # qccl refuses a rank that receives from itself
        bad = dist.P2POp(dist.irecv, torch.zeros(2), ctx.rank)
        fragment = "qccl: "
    else:  # torch itself refuses a sparse tensor
        bad = dist.P2POp(dist.irecv, torch.zeros(2, 2).to_sparse(), peer)
        fragment = ""
    with pytest.raises((ValueError, RuntimeError)) as info:
        dist.batch_isend_irecv([bad, dist.P2POp(dist.isend, torch.ones(2), peer)])
    assert str(info.value).startswith(fragment), info.value
    check_all_reduces_pair_up(ctx)
    # A later batch works, in a window of its own.
    out, into = torch.full((3,), float(ctx.rank)), torch.zeros(3)
    source = (ctx.rank - 1) % ctx.size
    for work in dist.batch_isend_irecv([dist.P2POp(dist.isend, out, peer), dist.P2POp(dist.irecv, into, source)]):
        work.wait()
    assert torch.equal(into, torch.full((3,), float(source)))


@pytest.mark.parametrize("how", ["self_as_peer", "sparse"])
def test_failed_batch_leaves_later_calls_working(world, how):
    world.run(rank_failed_batch, how)


def expect_out_of_step(group):
    expect(torch.distributed.DistBackendError, "the group is out of step",
           lambda: dist.all_reduce(torch.ones(3), group=group))
    expect(torch.distributed.DistBackendError, "the group is out of step",
           lambda: dist.broadcast(torch.ones(3), 0, group=group))


def rank_mismatch_across_ranks(ctx, case):
    n, me = ctx.size, ctx.rank
    group = dist.new_group(backend="qccl")
    if case == "sizes":  # rank 0 passes 4 elements, the others 8: Gloo alone would abort
        expect(ValueError, "rank 0 calls ALLREDUCE on 4 Float elements",
               lambda: dist.all_reduce(torch.ones(4 if me == 0 else 8), group=group))
    elif case == "ops":
        call = (lambda: dist.broadcast(torch.ones(4), 0, group=group)) if me == 0 else (
            lambda: dist.all_reduce(torch.ones(4), group=group))
        expect(ValueError, "the ranks' arguments do not match", call)
    elif case == "all_to_all_splits":  # all_to_all_single whose splits do not pair up
        in_splits = [2] + [1] * (n - 1) if me == 0 else [1] * n
        expect(ValueError, "rank 0 sends 8 bytes to rank 0, which expects 4 bytes from it",
               lambda: dist.all_to_all_single(torch.zeros(n), torch.ones(sum(in_splits)),
                                              [1] * n, in_splits, group=group))
    else:  # all_to_all_single whose splits disagree between two peers only
        # Rank 0 sends rank n-2 one element more and rank n-1 one less than they expect;
        # every rank sends and receives n elements, as it would with matching splits, so
        # only comparing rank 0's sends with its peers' receives can see it.
        in_splits = [1] * n
        if me == 0:
            in_splits[n - 2] += 1
            in_splits[n - 1] -= 1
        expect(ValueError, f"rank 0 sends 8 bytes to rank {n - 2}, which expects 4 bytes from it",
               lambda: dist.all_to_all_single(torch.zeros(n), torch.ones(n), [1] * n, in_splits, group=group))
    # qccl cannot tell a wrong argument from a rank that skipped a call (an error torch
    # raised before the call reached qccl): every later collective raises, on every rank.
    expect_out_of_step(group)
    dist.destroy_process_group(group)


@pytest.mark.parametrize("case", ["sizes", "ops", "all_to_all_splits", "all_to_all_between_peers"])
def test_mismatch_across_ranks_raises_on_every_rank(world, case):
    world.run(rank_mismatch_across_ranks, case)


def rank_error_torch_raises_on_one_rank(ctx):
    group = dist.new_group(backend="qccl")
    # torch refuses mixed dtypes before the call reaches qccl, on rank 0 only: rank 0
    # skips a collective that the other ranks make.
    tensors = [torch.ones(2), torch.ones(2, dtype=torch.float64 if ctx.rank == 0 else torch.float32)]
    outcomes = []
    try:
        dist.all_reduce_coalesced(tensors, group=group)
        outcomes.append("ran")
    except (ValueError, RuntimeError) as error:
        outcomes.append(type(error).__name__)
    for step in range(3):
        tensor, expected = step_values(ctx, step)
        try:
            dist.all_reduce(tensor, group=group)
        except (ValueError, torch.distributed.DistBackendError) as error:
            assert str(error).startswith("qccl: "), error
            outcomes.append("raised")
            continue
        assert torch.equal(tensor, expected), (step, tensor, expected)  # never a wrong result
        outcomes.append("ok")
    dist.destroy_process_group(group)
    return outcomes


def test_a_call_skipped_on_one_rank_never_pairs_wrongly(world):
    outcomes = world.run(rank_error_torch_raises_on_one_rank)
    # Rank 0's first all_reduce met the others' all_reduce_coalesced: from there on, the
    # group raises on every rank rather than pair each call with the wrong one.
    assert all(o[1:] == ["raised"] * 3 for o in outcomes), outcomes
