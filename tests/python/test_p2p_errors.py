"""Point-to-point calls that do not fit: a receive of another size, dtype or codec than
the message fails on both ranks with a clear error and writes nothing, and the pair
keeps working; a peer that dies, or never sends, fails the call within the timeout."""

import multiprocessing as mp
import os

import pytest
import torch
import torch.distributed as dist

import qccl
from world import init_loopback_rank, report_outcome, spawn_ranks


def _expect_error(fn, kind, *fragments):
    with pytest.raises(kind) as info:
        fn()
    text = str(info.value)
    assert text.startswith("qccl: "), text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def _still_in_sync(ctx, group=None):
    # A correct exchange right after the failure proves both sides skipped the bad message.
    if ctx.rank == 0:
        dist.send(torch.arange(6.0), 1, group=group)
    elif ctx.rank == 1:
        got = torch.zeros(6)
        dist.recv(got, 0, group=group)
        assert torch.equal(got, torch.arange(6.0))


def rank_mismatch_with_posted_receive(ctx, sent, posted):
    # The barrier orders it: the receive is posted before the message arrives.
    if ctx.rank == 0:
        dist.barrier()
        _expect_error(lambda: dist.send(sent, 1), ValueError, "rejected", "rank 1 posted a receive")
    elif ctx.rank == 1:
        buf = posted.clone()
        work = dist.irecv(buf, 0)
        dist.barrier()
        _expect_error(work.wait, ValueError, "does not fit", "from rank 0")
        assert torch.equal(buf, posted), "a rejected message must not be written"
    else:
        dist.barrier()
    _still_in_sync(ctx)
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
    # The message arrives before the receive: the send has completed when the receiver
    # finds that it does not fit, so the rejection reaches rank 0 later, ahead of anything
    # else rank 1 sends it; rank 0's next send raises it.
    if ctx.rank == 0:
        dist.send(torch.ones(4), 1)
        dist.barrier()
        dist.recv(torch.zeros(1), 1)  # sent by rank 1 after the rejection
        _expect_error(lambda: dist.send(torch.arange(6.0), 1), ValueError, "was rejected", "carried 4 elements")
    elif ctx.rank == 1:
        dist.barrier()
        buf = torch.zeros(8)
        _expect_error(lambda: dist.recv(buf, 0), ValueError, "does not fit")
        assert torch.equal(buf, torch.zeros(8))
        dist.send(torch.zeros(1), 0)
    else:
        dist.barrier()
    _still_in_sync(ctx)
    dist.barrier()


def test_mismatch_found_after_the_send_completed(world2):
    world2.run(rank_mismatch_with_staged_message)


def rank_codec_mismatch(ctx):
    codec = "int8" if ctx.rank == 0 else "none"
    group = dist.new_group(pg_options=qccl.Options(p2p_codec=codec))
    x = torch.randn(1000)
    if ctx.rank == 0:
        dist.barrier(group=group)
        _expect_error(lambda: dist.send(x, 1, group=group), ValueError, "codec int8", "QCCL_P2P_CODEC")
    elif ctx.rank == 1:
        work = dist.irecv(torch.zeros(1000), 0, group=group)
        dist.barrier(group=group)
        _expect_error(work.wait, ValueError, "codec int8", "codec none")
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
        report_outcome(report, rank, lambda: dist.irecv(torch.zeros(3), 1).wait())
        release.set()
    dist.destroy_process_group()


def test_receive_from_a_silent_peer_times_out():
    ctx = mp.get_context("spawn")
    report, release = ctx.Queue(), ctx.Event()
    codes = spawn_ranks(2, silent_peer_rank, (report, release))
    assert codes == [0, 0], codes
    for _ in range(2):
        rank, kind, message, seconds = report.get(timeout=60)
        assert kind == "DistBackendError", (kind, message)
        assert "timed out" in message and "recv from rank 1" in message, message
        assert TIMEOUT_S - 1 < seconds < TIMEOUT_S + SLACK_S, seconds
