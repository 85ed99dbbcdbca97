"""Subgroups (including ones that leave ranks out), sequence numbers and timeouts."""

import datetime

import torch
import torch.distributed as dist


def rank_subgroups(ctx):
    n, me = ctx.size, ctx.rank
    members = [0, n - 1]
    sub = dist.new_group(members)  # backend: the default group's, i.e. qccl
    without_zero = dist.new_group(list(range(1, n)))
    if me in members:
        t = torch.tensor([float(me)])
        dist.all_reduce(t, group=sub)
        assert t.item() == sum(members)
        assert sub._get_backend(torch.device("cpu")).name() == "qccl"
    else:
        assert sub == dist.GroupMember.NON_GROUP_MEMBER
    if me != 0:
        t = torch.tensor([1])
        dist.all_reduce(t, group=without_zero)
        assert t.item() == n - 1
        out = [torch.zeros(1, dtype=torch.long) for _ in range(n - 1)]
        dist.all_gather(out, torch.tensor([me]), group=without_zero)
        assert [o.item() for o in out] == list(range(1, n))
    # The world group still works after subgroup traffic.
    t = torch.ones(1)
    dist.all_reduce(t)
    assert t.item() == n


def test_subgroups(world):
    world.run(rank_subgroups)


def rank_sequence_numbers(ctx):
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    before = backend._get_sequence_number_for_group()
    dist.all_reduce(torch.ones(2))
    dist.broadcast(torch.ones(2), 0)
    dist.barrier()
    after = backend._get_sequence_number_for_group()
    assert after - before == 3
    return after


def test_sequence_numbers_agree_across_ranks(world):
    numbers = world.run(rank_sequence_numbers)
    assert len(set(numbers)) == 1, numbers


def rank_set_timeout(ctx):
    dist.set_timeout(datetime.timedelta(seconds=45))  # its effect: test_faults.py
    t = torch.ones(3)
    dist.all_reduce(t)
    assert torch.equal(t, torch.full((3,), float(ctx.size)))


def test_set_timeout(world):
    world.run(rank_set_timeout)
