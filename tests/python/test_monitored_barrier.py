"""dist.monitored_barrier on qccl: Gloo's semantics and messages (rank 0 names the ranks
that did not arrive), in order with the group's other calls."""

import datetime

import torch
import torch.distributed as dist

from world import run_in_fresh_world

SHORT = datetime.timedelta(seconds=2)


def rank_all_arrive(ctx):
    t = torch.full((3,), float(ctx.rank))
    work = dist.all_reduce(t, async_op=True)  # queued before the barrier
    dist.monitored_barrier(timeout=SHORT, wait_all_ranks=True)
    work.wait()
    after = torch.ones(2)
    dist.all_reduce(after)  # the group goes on
    return t.tolist() == [float(sum(range(ctx.size)))] * 3 and after.tolist() == [float(ctx.size)] * 2


def test_monitored_barrier_when_every_rank_arrives(world):
    assert all(world.run(rank_all_arrive))


def _barrier_error(group, wait_all_ranks):
    try:
        dist.monitored_barrier(group, timeout=SHORT, wait_all_ranks=wait_all_ranks)
    except RuntimeError as error:
        return type(error).__name__, str(error)
    return None, "no error"


def rank_missing(ctx, wait_all_ranks):
    """Ranks 1.. stay away (blocked on the store) while rank 0 calls the barrier on qccl,
    then on Gloo for the reference message."""
    store = dist.distributed_c10d._get_default_store()
    if ctx.rank != 0:
        store.wait(["rank 0 is done"], datetime.timedelta(seconds=60))
        return None
    qccl_error = _barrier_error(None, wait_all_ranks)
    gloo_error = _barrier_error(ctx.gloo, wait_all_ranks)
    try:
        dist.all_reduce(torch.ones(1))
        after = "no error"
    except RuntimeError as error:
        after = str(error)
    store.set("rank 0 is done", "1")
    return qccl_error, gloo_error, after


def _glooish(message):
    """Gloo's sentence, from "Rank" (or "Ranks") on."""
    return message[message.index("Rank"):].splitlines()[0]


def test_monitored_barrier_names_the_rank_that_did_not_arrive():
    (kind, message), (_, gloo_message), after = run_in_fresh_world(2, rank_missing, False)[0]
    assert kind == "DistBackendError" and message.startswith("qccl: monitored_barrier"), message
    assert "Rank 1 failed to pass monitoredBarrier" in message, message
    assert _glooish(message) == _glooish(gloo_message), (message, gloo_message)
    # The ranks' Gloo calls no longer pair up: the group failed, later calls raise at once.
    assert after.startswith("qccl: all_reduce") and "failed earlier (monitored_barrier" in after, after


def test_monitored_barrier_waiting_for_all_ranks_names_them_all():
    (_, message), (_, gloo_message), _ = run_in_fresh_world(3, rank_missing, True)[0]
    assert "Ranks 1, 2 failed to pass monitoredBarrier" in message, message
    assert _glooish(message) == _glooish(gloo_message), (message, gloo_message)
