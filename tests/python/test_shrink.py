"""dist.shrink_group on qccl (issue 30): after a rank is SIGKILLed with a call in flight,
the survivors shrink the group (SHRINK_ABORT cuts the pending call short) and every op of
the new group gives what float64 arithmetic says, over shared memory and over sockets."""

import multiprocessing as mp
import os
import signal

import pytest
import torch
import torch.distributed as dist

from world import init_loopback_rank, spawn_ranks

SIZE = 3
DEAD = 1  # not the last rank: the survivors' ranks move down
TIMEOUT_S = 20  # a test that waited for it would fail: SHRINK_ABORT must not wait


def ops_against_arithmetic(rank, size):
    """Every kind of op with values from this rank's rank in the current default group,
    each checked against what arithmetic says it gives: (op, whether it matched)."""
    results = []
    t = torch.full((1000,), float(rank + 1))
    dist.all_reduce(t)
    results.append(("all_reduce", t.double(), sum(r + 1 for r in range(size))))
    t = torch.full((300_000,), float(rank + 1))  # more than one shared-memory round
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    results.append(("all_reduce max", t.double(), size))
    t = torch.full((64,), 7.0 if rank == 0 else -1.0)
    dist.broadcast(t, src=0)
    results.append(("broadcast", t.double(), 7))
    out = torch.empty(4 * size)
    dist.all_gather_into_tensor(out, torch.full((4,), float(rank)))
    results.append(("all_gather", out.double(), torch.arange(size).repeat_interleave(4).double()))
    shard = torch.empty(4)
    dist.reduce_scatter_tensor(shard, torch.arange(4.0 * size) + rank)
    expected = (torch.arange(4.0 * size) * size + sum(range(size))).double()[4 * rank:4 * rank + 4]
    results.append(("reduce_scatter", shard.double(), expected))
    peer = (rank + 1) % size
    got = torch.zeros(8)
    ops = [dist.P2POp(dist.isend, torch.full((8,), float(rank)), peer),
           dist.P2POp(dist.irecv, got, (rank - 1) % size)]
    for work in dist.batch_isend_irecv(ops):
        work.wait()
    results.append(("send/recv", got.double(), (rank - 1) % size))
    dist.barrier()
    return [(what, bool(torch.equal(value, torch.as_tensor(want, dtype=torch.float64).expand_as(value))))
            for what, value, want in results]


def shrink_rank(rank, size, port, report, dying, sockets):
    if sockets:
        os.environ["QCCL_FORCE_NETWORK"] = "1"
    init_loopback_rank(rank, size, port, TIMEOUT_S)
    dist.all_reduce(torch.ones(4))
    if rank == DEAD:
        dying.set()
        os.kill(os.getpid(), signal.SIGKILL)
    dying.wait(60)
    pending = dist.all_reduce(torch.ones(4), async_op=True)  # in flight: rank 1 never joins it
    shrunk = dist.shrink_group([DEAD], shrink_flags=dist.distributed_c10d.SHRINK_ABORT)
    try:
        pending.wait()
        pending_outcome = "returned"
    except Exception as error:  # noqa: BLE001 - the error is the result
        pending_outcome = type(error).__name__
    new_rank, new_size = dist.get_rank(), dist.get_world_size()
    assert dist.group.WORLD is shrunk or dist.get_world_size(shrunk) == new_size
    report.put((rank, new_rank, new_size, pending_outcome, ops_against_arithmetic(new_rank, new_size)))
    dist.destroy_process_group()


@pytest.mark.parametrize("sockets", [False, True], ids=["shared-memory", "sockets"])
def test_shrink_after_a_rank_was_killed_with_a_call_in_flight(sockets):
    ctx = mp.get_context("spawn")
    report = ctx.Queue()
    dying = ctx.Event()
    codes = spawn_ranks(SIZE, shrink_rank, (report, dying, sockets), timeout_s=120)
    assert codes[DEAD] == -signal.SIGKILL and [c for r, c in enumerate(codes) if r != DEAD] == [0, 0], codes
    results = sorted(report.get(timeout=10) for _ in range(SIZE - 1))
    assert [(r[1], r[2]) for r in results] == [(0, 2), (1, 2)], results  # ranks 0 and 2 -> 0 and 1
    for rank, _, _, pending, ops in results:
        assert pending == "DistBackendError", (rank, pending)
        assert all(right for _, right in ops), (rank, ops)
