"""qccl.straggler_report and stats()["peer_waits"]: a rank slowed on purpose is named, the
others are not, over shared memory and over sockets."""

import time

import pytest
import torch
import torch.distributed as dist

import qccl
from world import run_in_fresh_world

SLOW_RANK = 1
DELAY_S = 0.03
CALLS = 12


def _slow_one_rank(ctx, force_network):
    group = dist.new_group(backend="qccl", pg_options=qccl.Options(force_network=force_network))
    used_memory = qccl.stats(group)["shared_memory"]["used"]
    t = torch.ones(1000)
    dist.all_reduce(t, group=group)
    qccl.reset_stats(group)
    for _ in range(CALLS):
        if ctx.rank == SLOW_RANK:
            time.sleep(DELAY_S)  # the straggler: it reaches every call late
        dist.all_reduce(t, group=group)
    waits = qccl.stats(group)["peer_waits"]
    report = qccl.straggler_report(group)
    qccl.reset_stats(group)
    after_reset = qccl.stats(group)["peer_waits"]
    return used_memory, waits, report, str(report), after_reset


@pytest.mark.parametrize("force_network", [False, True], ids=["shared-memory", "sockets"])
def test_a_rank_slowed_on_purpose_is_named_and_the_others_are_not(force_network):
    results = run_in_fresh_world(3, _slow_one_rank, force_network)
    for rank, (used_memory, waits, report, text, after_reset) in enumerate(results):
        assert used_memory == (not force_network)
        # This rank's own view: the others waited for the slow rank about DELAY_S per call.
        if rank != SLOW_RANK:
            assert waits[SLOW_RANK]["checks"] >= CALLS
            assert waits[SLOW_RANK]["seconds"] >= 0.5 * CALLS * DELAY_S, waits
            assert waits[SLOW_RANK]["longest_seconds"] >= 0.5 * DELAY_S, waits
        # Every rank's report, from every rank's numbers, names the slow rank and only it.
        assert report.stragglers == [SLOW_RANK], text
        slow = report.ranks[SLOW_RANK]
        assert slow.times >= CALLS, text  # each of the other two ranks, at least half the calls
        assert 0.5 * DELAY_S <= slow.median_seconds <= 2 * DELAY_S, text
        assert set(slow.seconds_by_rank) == {0, 2}
        assert f"rank {SLOW_RANK} made the others wait" in text
        assert after_reset == {}, after_reset
