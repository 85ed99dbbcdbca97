"""Point-to-point calls that do not fit: a receive of another size, dtype or codec than
the message fails with a clear error and writes nothing; the sender's send has completed
by then, and its first receive from that peer still waiting (or else its next call
involving that peer) raises the rejection and does nothing; the pair and the group keep
working. A peer that dies, or never sends, fails the call within the timeout."""

import multiprocessing as mp
import os

import pytest
import torch
import torch.distributed as dist

import qccl
from world import World, init_loopback_rank, report_outcome, spawn_ranks


def _expect_error(fn, kind, *fragments):
    with pytest.raises(kind) as info:
        fn()
    text = str(info.value)
    assert text.startswith("qccl: "), text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def _pair_and_group_still_work(ctx):
    # After a rejection: messages both ways between ranks 0 and 1 arrive intact, receives
    # from any source get these fresh messages (so nothing of the rejected exchange was
    # left staged, or it would match first), and a collective sums correctly.
    forward, backward = torch.arange(6.0) + 0.5, -torch.arange(3.0)
    if ctx.rank == 0:
        dist.send(forward, 1)
        got = torch.zeros(3)
        assert dist.recv(got) == 1
        assert torch.equal(got, backward)
    elif ctx.rank == 1:
        got = torch.zeros(6)
        assert dist.recv(got) == 0
        assert torch.equal(got, forward)
        dist.send(backward, 0)
    total = torch.full((5,), float(ctx.rank + 1))
    dist.all_reduce(total)
    assert torch.equal(total, torch.full((5,), ctx.size * (ctx.size + 1) / 2))


ANSWER = torch.tensor([42.0, -1.5])


def _answer_rejection():
    # What a receiver does after rejecting rank 0's message: it answers. The Rejected
    # status went out before this message, on the same stream.
    dist.send(ANSWER, 0)


def _receive_answer_reporting(*fragments):
    # Rank 0 waits for rank 1's answer: that receive (waiting, or posted after the status
    # arrived) reports the rejection, takes no message, and the next receive gets it.
    answer = torch.zeros(2)
    _expect_error(lambda: dist.recv(answer, 1), ValueError, "did nothing", "took no message", *fragments)
    assert torch.equal(answer, torch.zeros(2)), "a receive that reports a rejection must not take a message"
    dist.recv(answer, 1)
    assert torch.equal(answer, ANSWER)


def rank_mismatch_with_posted_receive(ctx, sent, posted):
    # The barrier orders it: the receive is posted before the message arrives.
    if ctx.rank == 0:
        dist.barrier()
        dist.send(sent, 1)  # completes: a send does not wait for the receiver's verdict
        _receive_answer_reporting("rejected", "rank 1 posted a receive", "send to rank 1 (tag 0) on rank 0")
    elif ctx.rank == 1:
        buf = posted.clone()
        work = dist.irecv(buf, 0)
        dist.barrier()
        _expect_error(work.wait, ValueError, "does not fit", "from rank 0")
        assert torch.equal(buf, posted), "a rejected message must not be written"
        _answer_rejection()
    else:
        dist.barrier()
    _pair_and_group_still_work(ctx)
    dist.barrier()


MISMATCHES = {
    "size": (torch.ones(4), torch.full((8,), 7.0)),
    # Beyond what fits in the control message: the payload follows and must be drained.
    "large size": (torch.ones(1 << 16), torch.full((1 << 15,), 7.0)),
    "dtype": (torch.ones(4), torch.full((4,), 7, dtype=torch.int32)),
}


@pytest.mark.parametrize("what", list(MISMATCHES))
def test_mismatch_fails_both_sides(world, what):
    world.run(rank_mismatch_with_posted_receive, *MISMATCHES[what])


def rank_mismatch_with_staged_message(ctx):
    # The message arrives before the receive and is staged; the receive posted later
    # rejects it, and the rejection reaches rank 0 as in the posted case.
    if ctx.rank == 0:
        dist.send(torch.ones(4), 1)
        dist.barrier()
        _receive_answer_reporting("was rejected", "carried 4 elements", "posted a receive for 8 elements")
    elif ctx.rank == 1:
        dist.barrier()
        buf = torch.zeros(8)
        _expect_error(lambda: dist.recv(buf, 0), ValueError, "does not fit")
        assert torch.equal(buf, torch.zeros(8))
        _answer_rejection()
    else:
        dist.barrier()
    _pair_and_group_still_work(ctx)
    dist.barrier()


def test_mismatch_found_after_the_send_completed(world2):
    world2.run(rank_mismatch_with_staged_message)


# --- what the call that reports a rejection does -----------------------------------------
# These run in a world with a short group timeout: a receive left waiting for a message
# that never comes fails in seconds, and so does everything after it.

QUICK_TIMEOUT_S = 5


@pytest.fixture(scope="module")
def _quick_worlds():
    worlds = {}
    yield worlds
    for world in worlds.values():
        world.close()


@pytest.fixture
def quick_world2(_quick_worlds):
    world = _quick_worlds.get(2)
    if world is None or world.broken:
        if world is not None:
            world.close()
        world = _quick_worlds[2] = World(2, timeout_s=QUICK_TIMEOUT_S)
    return world


def _count_rejections(error):
    text = str(error)
    assert text.startswith("qccl: ") and "did nothing" in text, text
    rejections = text.count(") was rejected: it carried")
    assert rejections > 0, text
    return rejections


def _until_delivered(call, tensor, peer, failure):
    # The documented way to handle a send or receive that reports an earlier rejection:
    # it did nothing (a send sent nothing, a receive took no message), so it is made
    # again (and again, if that one reports another rejection that arrived meanwhile).
    # Returns how many rejections the calls reported.
    reported = 0
    for _ in range(10):
        try:
            call(tensor, peer)
            return reported
        except ValueError as error:
            reported += _count_rejections(error)
    raise AssertionError(failure)


def _send_until_delivered(tensor, dst):
    return _until_delivered(dist.send, tensor, dst, "a message was not delivered after 10 sends")


def _recv_until_delivered(tensor, src):
    return _until_delivered(dist.recv, tensor, src, "no message was received after 10 receives")


def rank_calls_after_a_rejection(ctx, rejected, posted, following):
    # Rank 0's message is staged and rank 1's receive rejects it. Rank 0's next calls
    # involving rank 1 are a send and a receive of rank 1's answer: whichever reports
    # the rejection (that depends on when the status arrives, but the answer comes after
    # it, so one of them does) did nothing, and doing it again delivers or takes the
    # message exactly once.
    if ctx.rank == 0:
        dist.send(rejected, 1)  # staged: rank 1 posts its receive after the barrier
        dist.barrier()
        dist.barrier()  # rank 1 has rejected it and answered
        reported = _send_until_delivered(following, 1)
        answer = torch.zeros(2)
        reported += _recv_until_delivered(answer, 1)
        assert reported == 1, reported
        assert torch.equal(answer, ANSWER)
    elif ctx.rank == 1:
        dist.barrier()
        buf = posted.clone()
        _expect_error(lambda: dist.recv(buf, 0), ValueError, "does not fit", "from rank 0")
        assert torch.equal(buf, posted), "a rejected message must not be written"
        _answer_rejection()
        dist.barrier()
        got = torch.zeros_like(following)
        dist.recv(got, 0)
        assert torch.equal(got, following)
    # Its receives from any source would take a second copy of `following` first.
    _pair_and_group_still_work(ctx)


LATE_REJECTIONS = {
    # Every message fits in the control message.
    "small": (torch.ones(8), torch.zeros(16), torch.arange(16.0) * 0.5 + 100),
    # Payloads behind the control message: the rejected one is drained from the payload
    # slot, and the stream stays in step for the next.
    "large": (torch.ones(1 << 15), torch.zeros(1 << 16), torch.arange(float(1 << 16)) - 7),
}


@pytest.mark.parametrize("sizes", list(LATE_REJECTIONS))
def test_the_call_reporting_a_rejection_does_nothing(quick_world2, sizes):
    quick_world2.run(rank_calls_after_a_rejection, *LATE_REJECTIONS[sizes])


def rank_two_rejections(ctx):
    # Two staged messages rejected before rank 0 calls again: both are reported, each
    # once, by the calls that follow.
    if ctx.rank == 0:
        dist.send(torch.ones(4), 1)
        dist.send(torch.ones(5), 1)
        dist.barrier()
        dist.barrier()
        reported = _send_until_delivered(torch.arange(3.0), 1)
        answer = torch.zeros(2)
        reported += _recv_until_delivered(answer, 1)
        assert reported == 2, reported
    elif ctx.rank == 1:
        dist.barrier()
        for _ in range(2):
            _expect_error(lambda: dist.recv(torch.zeros(2), 0), ValueError, "does not fit")
        _answer_rejection()
        dist.barrier()
        got = torch.zeros(3)
        dist.recv(got, 0)
        assert torch.equal(got, torch.arange(3.0))
    _pair_and_group_still_work(ctx)


def test_every_rejection_is_reported_once(quick_world2):
    quick_world2.run(rank_two_rejections)


def rank_sends_racing_a_rejection(ctx, rounds):
    # Rank 0 sends while rank 1 rejects, with nothing ordering the two: which send reports
    # the rejection depends on timing, but whichever does must have delivered nothing,
    # and every rejection is reported exactly once, at the latest by the receive of the
    # answer rank 1 sends after the last one.
    reported = 0
    for i in range(rounds):
        first, second = torch.full((16,), float(i)), torch.full((3,), -float(i))
        if ctx.rank == 0:
            reported += _send_until_delivered(torch.ones(8), 1)  # staged, then rejected
            dist.barrier()
            reported += _send_until_delivered(first, 1)
            reported += _send_until_delivered(second, 1)
        elif ctx.rank == 1:
            dist.barrier()
            _expect_error(lambda: dist.recv(torch.zeros(16), 0), ValueError, "does not fit")
            for expected in (first, second):
                got = torch.zeros_like(expected)
                dist.recv(got, 0)
                assert torch.equal(got, expected), (i, got, expected)
    if ctx.rank == 0:
        answer = torch.zeros(2)
        reported += _recv_until_delivered(answer, 1)
        assert torch.equal(answer, ANSWER)
        assert reported == rounds, (reported, rounds)
    elif ctx.rank == 1:
        _answer_rejection()
    _pair_and_group_still_work(ctx)


def test_sends_racing_a_rejection_deliver_each_message_once(quick_world2):
    quick_world2.run(rank_sends_racing_a_rejection, 30)


def rank_codec_mismatch(ctx):
    codec = "int8" if ctx.rank == 0 else "none"
    group = dist.new_group(pg_options=qccl.Options(p2p_codec=codec))
    x = torch.randn(1000)
    if ctx.rank == 0:
        dist.barrier(group=group)
        dist.send(x, 1, group=group)
        # Rank 1's answer comes after the rejection: the receive waiting for it reports it.
        answer = torch.zeros(2)
        _expect_error(lambda: dist.recv(answer, 1, group=group), ValueError, "codec int8", "QCCL_P2P_CODEC")
        dist.recv(answer, 1, group=group)
        assert torch.equal(answer, ANSWER)
    elif ctx.rank == 1:
        work = dist.irecv(torch.zeros(1000), 0, group=group)
        dist.barrier(group=group)
        _expect_error(work.wait, ValueError, "codec int8", "codec none")
        dist.send(ANSWER, 0, group=group)
    dist.destroy_process_group(group)


def test_codec_mismatch_fails_both_sides(world2):
    world2.run(rank_codec_mismatch)


def test_p2p_codec_setting_is_validated():
    with pytest.raises(ValueError, match="none, fp16, bf16, int8"):
        qccl.Options(p2p_codec="int4")
    assert qccl.Options(p2p_codec="bf16").resolved()["p2p_codec"] == "bf16"


# --- dead and silent peers ----------------------------------------------------------------

TIMEOUT_S = 5
SLACK_S = 20


def dies_mid_transfer_rank(rank, size, port, report):
    init_loopback_rank(rank, size, port, TIMEOUT_S)
    dist.barrier()
    if rank == 1:
        dist.isend(torch.ones(1 << 26), 0)  # 256 MiB, cut off by the exit below
        os._exit(17)
    big = torch.zeros(1 << 26)
    report_outcome(report, rank, lambda: dist.recv(big, 1))
    report_outcome(report, rank, lambda: dist.send(torch.ones(3), 1))
    dist.destroy_process_group()


def test_peer_dying_mid_transfer_fails_receive_and_later_sends():
    report = mp.get_context("spawn").Queue()
    codes = spawn_ranks(2, dies_mid_transfer_rank, (report,))
    assert codes == [0, 17], codes
    for _ in range(2):
        rank, kind, message, seconds = report.get(timeout=60)
        assert kind == "DistBackendError", (kind, message)
        assert message.startswith("qccl: ") and "rank 1 is unreachable" in message, message
        assert seconds < TIMEOUT_S + SLACK_S, seconds


def silent_peer_rank(rank, size, port, report, release):
    init_loopback_rank(rank, size, port, TIMEOUT_S)
    dist.barrier()
    if rank == 1:
        release.wait(120)  # alive, but never sends
    else:
        report_outcome(report, rank, lambda: dist.recv(torch.zeros(3), 1))
        # The timeout closed the pair (docs/errors.md, rule 9): this one raises at once.
        report_outcome(report, rank, lambda: dist.irecv(torch.zeros(3), 1).wait())
        release.set()
    dist.destroy_process_group()


def test_receive_from_a_silent_peer_times_out():
    ctx = mp.get_context("spawn")
    report, release = ctx.Queue(), ctx.Event()
    codes = spawn_ranks(2, silent_peer_rank, (report, release))
    assert codes == [0, 0], codes
    rank, kind, message, seconds = report.get(timeout=60)
    assert kind == "DistBackendError", (kind, message)
    assert " Timed out " in message and "recv from rank 1" in message, message
    assert TIMEOUT_S - 1 < seconds < TIMEOUT_S + SLACK_S, seconds
    rank, kind, message, seconds = report.get(timeout=60)
    assert kind == "DistBackendError", (kind, message)
    assert "recv from rank 1" in message and "was closed after a timeout" in message, message
    assert seconds < SLACK_S, seconds
