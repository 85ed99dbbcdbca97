"""Point-to-point on qccl: send/recv, isend/irecv with tags, several receives outstanding
from one peer, receive from any source, and batch_isend_irecv in both directions (the
pattern of a 1F1B middle pipeline stage)."""

import torch
import torch.distributed as dist

from reference import make_input


def rank_ring(ctx):
    n, me = ctx.size, ctx.rank
    right, left = (me + 1) % n, (me - 1) % n
    for dtype in [torch.float32, torch.int16, torch.bool, torch.bfloat16, torch.complex64]:
        payload = make_input(me, torch.float32, 9).to(dtype)
        got = torch.zeros_like(payload)
        # Even ranks send first: blocking calls must not deadlock in a ring.
        if me % 2 == 0:
            dist.send(payload, right)
            dist.recv(got, left)
        else:
            dist.recv(got, left)
            dist.send(payload, right)
        assert torch.equal(got, make_input(left, torch.float32, 9).to(dtype)), f"ring {dtype}"


def test_send_recv_ring(world):
    world.run(rank_ring)


def rank_many_outstanding(ctx):
    if ctx.rank == 0:
        works = [dist.isend(torch.full((4,), float(i)), 1, tag=i) for i in range(6)]
        for w in works:
            w.wait()
    elif ctx.rank == 1:
        bufs = [torch.zeros(4) for _ in range(6)]
        works = [dist.irecv(b, 0, tag=i) for i, b in enumerate(bufs)]
        for w in reversed(works):  # the order of waits must not matter
            w.wait()
        for i, b in enumerate(bufs):
            assert torch.equal(b, torch.full((4,), float(i))), f"message {i}"
    dist.barrier()


def test_many_outstanding_receives_from_one_peer(world):
    world.run(rank_many_outstanding)


def rank_any_source(ctx):
    if ctx.rank == 0:
        seen = set()
        for _ in range(ctx.size - 1):
            buf = torch.zeros(3, dtype=torch.int64)
            src = dist.recv(buf)  # src=None: from any rank
            assert torch.equal(buf, torch.full((3,), src)), f"payload from {src}"
            seen.add(src)
        assert seen == set(range(1, ctx.size))
    else:
        dist.send(torch.full((3,), ctx.rank, dtype=torch.int64), 0)


def test_recv_from_any_source(world):
    world.run(rank_any_source)


def rank_batch(ctx):
    n, me = ctx.size, ctx.rank
    right, left = (me + 1) % n, (me - 1) % n
    to_right, to_left = make_input(me, torch.float32, 5, seed=1), make_input(me, torch.float32, 5, seed=2)
    from_left, from_right = torch.zeros(5), torch.zeros(5)
    ops = [
        dist.P2POp(dist.irecv, from_left, left),
        dist.P2POp(dist.isend, to_right, right),
        dist.P2POp(dist.irecv, from_right, right),
        dist.P2POp(dist.isend, to_left, left),
    ]
    works = dist.batch_isend_irecv(ops)
    for w in works:
        w.get_future().wait()
        w.wait()
    # At 2 ranks both neighbours are one peer and the tags are equal: messages match in
    # posting order, which is what the assertions below rely on.
    expected_left = make_input(left, torch.float32, 5, seed=1)
    expected_right = make_input(right, torch.float32, 5, seed=2)
    assert torch.equal(from_left, expected_left), "from the left neighbour"
    assert torch.equal(from_right, expected_right), "from the right neighbour"


def test_batch_isend_irecv_both_directions(world):
    world.run(rank_batch)


def rank_p2p_futures(ctx):
    if ctx.rank == 0:
        future = dist.isend(torch.arange(5.0), 1).get_future()
        future.wait()
    elif ctx.rank == 1:
        buf = torch.zeros(5)
        work = dist.irecv(buf, 0)
        (value,) = work.get_future().wait()
        assert torch.equal(value, torch.arange(5.0))
        assert work.is_completed()
    dist.barrier()


def test_p2p_works_have_futures(world):
    world.run(rank_p2p_futures)
