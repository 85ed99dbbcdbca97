"""A peer that dies or hangs makes the survivors raise within the group timeout (5 s
here), abort() wakes waiters at once, and destroy_process_group returns promptly."""

import datetime
import multiprocessing as mp
import os
import time

import pytest
import torch
import torch.distributed as dist

from world import init_loopback_rank, report_outcome, spawn_ranks

TIMEOUT_S = 5
# Generous slack for a loaded 2-core CI machine; what matters is "bounded", not "fast".
SLACK_S = 20


def _survivor(rank, report, action):
    """Reports `action`'s outcome (report_outcome), then how long destroy took."""
    report_outcome(report, rank, action)
    start = time.monotonic()
    dist.destroy_process_group()
    report.put((rank, "destroyed", "", time.monotonic() - start))


def dead_peer_rank(rank, size, port, report, numel, env):
    os.environ.update(env)
    init_loopback_rank(rank, size, port, TIMEOUT_S)
    dist.barrier()
    if rank == size - 1:
        os._exit(17)  # dies without a word, like a crashed worker
    _survivor(rank, report, lambda: dist.all_reduce(torch.ones(numel)))


def hung_peer_rank(rank, size, port, report, release, shorter_timeout):
    init_loopback_rank(rank, size, port, TIMEOUT_S)
    dist.barrier()
    if rank == size - 1:
        release.wait(120)  # alive, but never joins the collective
        return
    if shorter_timeout:
        dist.set_timeout(datetime.timedelta(seconds=2))
    _survivor(rank, report, lambda: dist.all_reduce(torch.ones(10)))
    release.set()


ABORTED_CALLS = {
    "all_reduce": lambda: dist.all_reduce(torch.ones(10), async_op=True),
    # Large enough to run on its own transfer (not in the check), exact and int8.
    "reduce_scatter": lambda: dist.reduce_scatter_tensor(torch.empty(1 << 18), torch.ones(1 << 19), async_op=True),
    # Over sockets both take the deep pipeline (algo/deep_reduction.h): 2 and 4 MiB.
    "large_all_reduce": lambda: dist.all_reduce(torch.ones(1 << 20), async_op=True),
}
# (call, settings): without the check (QCCL_VERIFY=0) rank 0 goes straight into the
# transfer, which rank 1 never joins; over sockets and through shared memory.
ABORT_CASES = [("all_reduce", {}),
               ("reduce_scatter", {"QCCL_VERIFY": "0"}),
               ("reduce_scatter", {"QCCL_VERIFY": "0", "QCCL_FORCE_NETWORK": "1"}),
               ("reduce_scatter", {"QCCL_VERIFY": "0", "QCCL_FORCE_NETWORK": "1", "QCCL_CODEC": "int8"}),
               ("large_all_reduce", {"QCCL_VERIFY": "0", "QCCL_FORCE_NETWORK": "1"})]


def abort_rank(rank, size, port, report, release, call, env):
    os.environ.update(env)
    init_loopback_rank(rank, size, port, 600)
    dist.barrier()
    if rank == 1:
        release.wait(120)  # never joins the collective below
        return
    work = ABORTED_CALLS[call]()
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    report_outcome(report, rank, lambda: (backend.abort(), work.wait()))
    release.set()


def collect(report, count):
    return [report.get(timeout=120) for _ in range(count)]


# A small all_reduce (its check meets the dead peer), and a large one over sockets without
# the check, so that the deep pipeline's transfers meet it (algo/deep_reduction.h).
@pytest.mark.parametrize("numel,env", [(1000, {}), (1 << 20, {"QCCL_VERIFY": "0", "QCCL_FORCE_NETWORK": "1"})],
                         ids=["small", "deep-sockets"])
def test_dead_peer_raises_on_survivors_within_timeout(numel, env):
    ctx = mp.get_context("spawn")
    report = ctx.Queue()
    codes = spawn_ranks(3, dead_peer_rank, (report, numel, env))
    assert codes == [0, 0, 17], codes
    results = collect(report, 4)
    errors = [r for r in results if r[1] != "destroyed"]
    destroys = [r for r in results if r[1] == "destroyed"]
    assert len(errors) == 2 and len(destroys) == 2, results
    for rank, kind, message, seconds in errors:
        assert kind == "DistBackendError", (rank, kind, message)
        assert message.startswith("qccl: "), message
        assert seconds < TIMEOUT_S + SLACK_S, (rank, seconds)
    for rank, _, _, seconds in destroys:
        assert seconds < SLACK_S, f"destroy_process_group took {seconds:.1f}s on rank {rank}"


def _run_hung(shorter_timeout):
    ctx = mp.get_context("spawn")
    report, release = ctx.Queue(), ctx.Event()
    codes = spawn_ranks(2, hung_peer_rank, (report, release, shorter_timeout))
    assert codes == [0, 0], codes
    results = collect(report, 2)
    (rank, kind, message, seconds) = [r for r in results if r[1] != "destroyed"][0]
    assert kind == "DistBackendError", (kind, message)
    assert message.startswith("qccl: all_reduce") and " Timed out " in message, message  # Gloo's wording
    return seconds


def test_hung_peer_raises_after_the_group_timeout():
    seconds = _run_hung(shorter_timeout=False)
    assert TIMEOUT_S - 1 <= seconds < TIMEOUT_S + SLACK_S, seconds


def test_set_timeout_shortens_the_wait():
    seconds = _run_hung(shorter_timeout=True)
    assert seconds < TIMEOUT_S - 1, f"set_timeout(2s) ignored: waited {seconds:.1f}s"


@pytest.mark.parametrize("call,env", ABORT_CASES, ids=[
    f"{call}{'-' + '-'.join(f'{k[5:].lower()}={v}' for k, v in env.items()) if env else ''}" for call, env in ABORT_CASES])
def test_abort_wakes_a_waiter_at_once(call, env):
    ctx = mp.get_context("spawn")
    report, release = ctx.Queue(), ctx.Event()
    spawn_ranks(2, abort_rank, (report, release, call, env))
    (rank, kind, message, seconds) = collect(report, 1)[0]
    assert kind == "DistBackendError", (kind, message)
    assert "abort" in message, message
    assert seconds < SLACK_S, seconds


LAST_WORDS = [4, 20_000, 200_000]  # float32 elements: inline, staged, and with a receive of its own


def last_words_rank(rank, size, port, report):
    """Rank 1 sends three messages and closes the group; rank 0 receives them afterwards."""
    init_loopback_rank(rank, size, port, TIMEOUT_S)
    if rank == 1:
        for tag, n in enumerate(LAST_WORDS, start=1):
            dist.send(torch.arange(n, dtype=torch.float32) * tag, dst=0, tag=tag)
        dist.destroy_process_group()
        return
    # Pending on a message that never comes: fails once rank 1 has closed the group.
    report_outcome(report, rank, lambda: dist.recv(torch.zeros(1), src=1, tag=99))
    received = []
    for tag, n in enumerate(LAST_WORDS, start=1):
        tensor = torch.zeros(n)
        dist.recv(tensor, src=1, tag=tag)
        received.append(torch.equal(tensor, torch.arange(n, dtype=torch.float32) * tag))
    report.put(("received", received))
    report_outcome(report, rank, lambda: dist.recv(torch.zeros(1), src=1, tag=4))
    dist.destroy_process_group()


def test_messages_sent_before_a_peer_closed_are_still_received():
    """A worker's last report arrives even if it closed the group before the receive was
    posted; a receive that nothing serves then fails at once."""
    report = mp.get_context("spawn").Queue()
    codes = spawn_ranks(2, last_words_rank, (report,))
    assert codes == [0, 0], codes
    pending, received, after = collect(report, 3)
    assert pending[1] == "DistBackendError" and "unreachable" in pending[2], pending
    assert received == ("received", [True, True, True])
    assert after[1] == "DistBackendError" and "unreachable" in after[2], after
    assert after[3] < SLACK_S
