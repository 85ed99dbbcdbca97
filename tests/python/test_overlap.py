"""Collectives posted async overlap on the wire (docs/design.md, "The worker"), and that
changes nothing a program can see: every call gives what it gives when issued one by
one, bit for bit as Gloo, in every order of completion; a burst is checked across ranks
call by call, so a mismatch or a qccl.exact() region inside a burst fails exactly the
calls it concerns, on every rank."""

import contextlib

import pytest
import torch
import torch.distributed as dist

import qccl

from reference import make_input, reduce_op

BURST = 24  # more than one check exchange holds (16 calls)


def burst_inputs(ctx, index):
    """The index-th call of a burst: its dtype, op and this rank's input (sizes vary)."""
    dtype = [torch.float32, torch.float64, torch.int32][index % 3]
    op = ["SUM", "MAX", "MIN"][index % 3]
    numel = [3, 1000, 70_000, 17][index % 4]
    return dtype, op, make_input(ctx.rank, dtype, numel=numel, seed=index)


def rank_burst_matches_gloo(ctx):
    tensors, works, extras = [], [], []
    for i in range(BURST):
        dtype, op, tensor = burst_inputs(ctx, i)
        tensors.append(tensor)
        works.append(dist.all_reduce(tensor, op=reduce_op(op), async_op=True))
        if i % 5 == 2:  # other collectives inside the burst keep their place
            gathered = [torch.empty(4) for _ in range(ctx.size)]
            works.append(dist.all_gather(gathered, torch.full((4,), float(ctx.rank + i)), async_op=True))
            extras.append((i, gathered))
    for work in reversed(works):  # waited on out of order
        work.wait()
    for i, tensor in enumerate(tensors):
        dtype, op, expected = burst_inputs(ctx, i)
        dist.all_reduce(expected, op=reduce_op(op), group=ctx.gloo)
        assert torch.equal(tensor, expected), f"call {i} ({dtype}, {op}) differs from Gloo"
    for i, gathered in extras:
        assert [g[0].item() for g in gathered] == [float(r + i) for r in range(ctx.size)]


def test_a_burst_of_async_calls_matches_gloo(world):
    world.run(rank_burst_matches_gloo)


def rank_async_calls_on_one_tensor_see_each_other(ctx):
    # Gloo's own process group runs async calls at once and gets these wrong; qccl orders
    # calls that share a tensor, as a CUDA stream does, and overlaps only the others.
    n = ctx.size
    for trial in range(5):
        twice = torch.ones(50_000)  # reduced 6 times in a row: n ** 6 everywhere
        works = [dist.all_reduce(twice, async_op=True) for _ in range(6)]

        # written by a broadcast, then read by an all_gather: rank 0's values everywhere
        written = torch.full((30_000,), float(ctx.rank + trial))
        gathered = torch.empty(n * 30_000)
        works += [dist.broadcast(written, 0, async_op=True), dist.all_gather_into_tensor(gathered, written, async_op=True)]

        # read by an all_to_all_single, then overwritten by a broadcast from the last rank
        sent = torch.arange(n * 1000, dtype=torch.float32) + 1000 * ctx.rank
        received = torch.empty(n * 1000)
        works += [dist.all_to_all_single(received, sent, async_op=True), dist.broadcast(sent, n - 1, async_op=True)]
        for work in reversed(works):
            work.wait()

        assert torch.equal(twice, torch.full((50_000,), float(n**6)))
        assert torch.equal(gathered, torch.full((n * 30_000,), float(trial)))
        expected = torch.cat([torch.arange(ctx.rank * 1000, (ctx.rank + 1) * 1000) + 1000.0 * r for r in range(n)])
        assert torch.equal(received, expected), f"trial {trial}: all_to_all_single read what the broadcast wrote"
        assert torch.equal(sent, torch.arange(n * 1000, dtype=torch.float32) + 1000 * (n - 1))


def test_async_calls_on_one_tensor_see_each_other(world):
    world.run(rank_async_calls_on_one_tensor_see_each_other)


def rank_mismatch_inside_a_burst(ctx):
    group = dist.new_group(backend="qccl")
    bad = 7
    works, tensors = [], []
    for i in range(BURST):
        numel = 5 if (i == bad and ctx.rank == 0) else 4
        tensors.append(torch.full((numel,), float(i + 1)))
        works.append(dist.all_reduce(tensors[-1], group=group, async_op=True))
    outcomes = []
    for i, work in enumerate(works):
        try:
            work.wait()
            assert torch.equal(tensors[i], torch.full_like(tensors[i], float(ctx.size * (i + 1))))
            outcomes.append("ok")
        except ValueError as error:
            assert "rank 0 calls ALLREDUCE on 5" in str(error), error
            outcomes.append("mismatch")
        except torch.distributed.DistBackendError as error:
            assert "the group is out of step" in str(error), error
            outcomes.append("out of step")
    dist.destroy_process_group(group)
    return outcomes


def test_a_mismatch_inside_a_burst_fails_that_call_on_every_rank(world):
    outcomes = world.run(rank_mismatch_inside_a_burst)
    expected = ["ok"] * 7 + ["mismatch"] + ["out of step"] * (BURST - 8)
    assert all(o == expected for o in outcomes), outcomes


def rank_exact_region_inside_a_burst(ctx):
    group = dist.new_group(backend="qccl", pg_options=qccl.Options(codec="int8", min_bytes=0))
    region = qccl.exact(group) if ctx.rank == 0 else contextlib.nullcontext()
    works, tensors = [], []
    with region:  # rank 0 alone reduces these exactly: every one of them must fail
        for i in range(BURST):
            tensors.append(torch.full((4096,), float(i)))
            works.append(dist.all_reduce(tensors[-1], group=group, async_op=True))
    for work in works:
        with pytest.raises(ValueError, match="qccl.exact"):
            work.wait()
    tensor = torch.ones(4096)
    dist.all_reduce(tensor, group=group)  # settings disagreements keep the group usable
    assert torch.allclose(tensor, torch.full((4096,), float(ctx.size)), rtol=0.01)
    dist.destroy_process_group(group)


def test_an_exact_region_on_one_rank_during_a_burst(world):
    world.run(rank_exact_region_inside_a_burst)


def compressed_burst(group, tensors, *, one_by_one):
    """all_reduce every tensor (the same one may appear twice), async and waited at the
    end, or each waited before the next is posted."""
    works = []
    for tensor in tensors:
        works.append(dist.all_reduce(tensor, group=group, async_op=True))
        if one_by_one:
            works[-1].wait()
    for work in works:
        work.wait()


def rank_compressed_burst_runs_as_one_by_one(ctx):
    """A burst of compressed calls runs together in one chunk pipeline (joint_allreduce.h):
    bit for bit what the calls give one by one, error feedback (the residual each tensor
    carries to its next call) and stochastic rounding included; a tensor reduced twice in
    the burst gets the second reduction of the first one's result."""
    results = {}
    for options in [dict(codec="int8", min_bytes=0), dict(codec="int4", min_bytes=0, stochastic=True)]:
        for mode in ["together", "one by one"]:
            group = dist.new_group(backend="qccl", pg_options=qccl.Options(**options))
            tensors = [make_input(ctx.rank, torch.float32, numel=n, seed=i) for i, n in enumerate([3000, 70_000, 513, 70_000])]
            burst = tensors + [tensors[1], tensors[0]]  # the second reductions must see the first's output
            for step in range(3):  # later steps use the residuals the earlier ones left
                compressed_burst(group, burst, one_by_one=mode == "one by one")
            results[mode] = [t.clone() for t in tensors]
            dist.destroy_process_group(group)
        for i, (a, b) in enumerate(zip(results["together"], results["one by one"])):
            assert torch.equal(a, b), f"{options}: tensor {i} differs when its calls run together"
        reference = make_input(ctx.rank, torch.float32, numel=3000, seed=0).double()
        dist.all_reduce(reference, group=ctx.gloo)
        assert not torch.equal(results["together"][0].double(), reference), "the burst must be compressed"


def test_a_compressed_burst_gives_the_one_by_one_results(world):
    world.run(rank_compressed_burst_runs_as_one_by_one)


def rank_aliasing_differs_across_ranks(ctx):
    """Rank 0 reduces one tensor twice in a burst, the others two tensors: every rank must
    get the one-by-one results (rank 0's second call reduces what its first wrote) and
    split its calls into runs alike, whether or not both calls land in one batch."""
    group = dist.new_group(backend="qccl", pg_options=qccl.Options(codec="int8", min_bytes=0))
    for _ in range(20):  # both calls in one batch, or not: timing decides
        first = torch.ones(5000)
        second = first if ctx.rank == 0 else torch.ones(5000)
        works = [dist.all_reduce(t, group=group, async_op=True) for t in [first, second]]
        for work in works:
            work.wait()
        n = ctx.size
        # One by one: the first call gives n everywhere; rank 0 then contributes n, the
        # others 1.
        expected_second = float(n + (n - 1))
        expected_first = expected_second if ctx.rank == 0 else float(n)
        assert torch.allclose(first, torch.full_like(first, expected_first), rtol=0.01), first[:4]
        assert torch.allclose(second, torch.full_like(second, expected_second), rtol=0.01), second[:4]
    dist.destroy_process_group(group)


def test_ranks_that_alias_differently_get_the_one_by_one_results(world2):
    world2.run(rank_aliasing_differs_across_ranks)


def rank_room_for_small_all_reduces(ctx):
    # The check makes room in its exchange for small exact all_reduces by what the ranks
    # wanted to carry lately. Only rank 0 wants room here (inside qccl.exact() its 8 KiB
    # float sum could ride in the check, the others compress theirs), yet every rank must
    # size the next exchanges alike; small all_reduces with and without room give Gloo's
    # result, also after the room shrinks back.
    group = dist.new_group(backend="qccl", pg_options=qccl.Options(codec="int8", min_bytes=0))

    def small_sum_matches_gloo(numel, seed):
        tensor = make_input(ctx.rank, torch.int32, numel=numel, seed=seed)
        expected = tensor.clone()
        dist.all_reduce(tensor, group=group)
        dist.all_reduce(expected, group=ctx.gloo)
        assert torch.equal(tensor, expected), (numel, seed)

    small_sum_matches_gloo(3, 0)
    region = qccl.exact(group) if ctx.rank == 0 else contextlib.nullcontext()
    with region, pytest.raises(ValueError, match="qccl.exact"):
        dist.all_reduce(torch.ones(2048), group=group)
    for seed, numel in enumerate([3, 2048, 1000, 1, 2048], start=1):
        small_sum_matches_gloo(numel, seed)
    for _ in range(40):  # more exchanges than the check remembers, none with a small all_reduce
        dist.broadcast(torch.ones(2), 0, group=group)
    for seed, numel in enumerate([2, 2048, 2048], start=10):
        small_sum_matches_gloo(numel, seed)
    dist.destroy_process_group(group)


def test_room_for_small_all_reduces_is_sized_alike_on_every_rank(world):
    world.run(rank_room_for_small_all_reduces)
