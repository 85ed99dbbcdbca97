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


def rank_split_group(ctx):
    n, me = ctx.size, ctx.rank
    halves = [list(range(0, n // 2)), list(range(n // 2, n))]
    mine = halves[0] if me < n // 2 else halves[1]
    sub = dist.split_group(split_ranks=halves, pg_options=None)
    assert sub._get_backend(torch.device("cpu")).name() == "qccl"
    assert dist.get_process_group_ranks(sub) == mine
    t = torch.tensor([float(me)])
    dist.all_reduce(t, group=sub)
    assert t.item() == sum(mine)
    if len(mine) == 2:  # point to point inside the split, in group ranks
        peer = 1 - dist.get_rank(sub)
        got = torch.zeros(2)
        ops = [
            dist.P2POp(dist.isend, torch.full((2,), float(me)), group_peer=peer, group=sub),
            dist.P2POp(dist.irecv, got, group_peer=peer, group=sub),
        ]
        for work in dist.batch_isend_irecv(ops):
            work.wait()
        assert torch.equal(got, torch.full((2,), float(mine[peer])))
    # A split that leaves ranks out returns NON_GROUP_MEMBER there.
    only_first = dist.split_group(split_ranks=[[0, n - 1]])
    if me in (0, n - 1):
        t = torch.ones(1)
        dist.all_reduce(t, group=only_first)
        assert t.item() == 2
    else:
        assert only_first == dist.GroupMember.NON_GROUP_MEMBER
    dist.barrier()


def test_split_group(world):
    world.run(rank_split_group)


def rank_device_mesh(ctx):
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (2, ctx.size // 2), mesh_dim_names=("pp", "dp"))
    dp = mesh.get_group("dp")
    t = torch.tensor([float(ctx.rank)])
    dist.all_reduce(t, group=dp)
    expected = sum(dist.get_process_group_ranks(dp))
    assert t.item() == expected
    assert dp._get_backend(torch.device("cpu")).name() == "qccl"


def test_device_mesh_groups(world):
    world.run(rank_device_mesh)
