"""A failed call fails everywhere (docs/errors.md, rule 9).

The reproduction of issue 27: the last rank reaches call 1 only after every other rank
gave up on it (group timeout). Before the fix, the late rank's call 1 completed, a retry on
an early rank paired with the late rank's call 2, and every later value was silently wrong.
Now the early ranks' retries and every later call raise DistBackendError naming the first
failure, on every rank, collectives and point-to-point alike. Call i sends
10**i * (rank + 1), so a call paired with another call's data can never look right.
"""

import datetime
import multiprocessing as mp
import os

import pytest
import torch
import torch.distributed as dist

from world import init_loopback_rank, spawn_ranks

TIMEOUT_S = 3
WAIT_S = 90  # for the early ranks to give up; never reached when things work


def _expected(op, call, size):
    """What call `call` of `op` must return, from arithmetic, not from qccl."""
    if op == "broadcast":
        return 10.0 ** call * 7
    if op == "sendrecv":
        return 10.0 ** call * size  # the late rank sends (rank + 1)
    return 10.0 ** call * sum(r + 1 for r in range(size))


def _call(op, call, rank, size):
    """Runs call number `call` of `op`; returns the value every element must have."""
    late = size - 1
    value = 10.0 ** call * (rank + 1)
    if op == "small":  # int64 SUM: rides in the cross-rank check at any world size
        t = torch.full((16,), int(value), dtype=torch.int64)
        dist.all_reduce(t)
    elif op in ("large", "compressed"):  # 4 MiB exact, or 256 KiB int8 (QCCL_CODEC below)
        t = torch.full((1 << 20,) if op == "large" else (1 << 16,), value)
        dist.all_reduce(t)
    elif op == "broadcast":
        t = torch.full((1024,), 10.0 ** call * 7 if rank == 0 else -1.0)
        dist.broadcast(t, src=0)
    elif op == "sendrecv":  # every early rank receives from the late one
        if rank == late:
            t = torch.full((1024,), value)
            for peer in range(late):
                dist.send(t, dst=peer)
        else:
            t = torch.zeros(1024)
            dist.recv(t, src=late)
    if rank == late and op == "sendrecv":
        return None  # a sender has nothing to check
    return t.double()


def _attempt(op, call, rank, size):
    """('ok', right?) or ('raised', type name, message)."""
    try:
        got = _call(op, call, rank, size)
    except Exception as error:  # noqa: BLE001 - the error is the result
        return ("raised", type(error).__name__, str(error))
    if got is None:
        return ("ok", True)
    want = _expected(op, call, size)
    tolerance = 0.02 * abs(want) if op == "compressed" else 0.0  # int8: a mixed call is 10x off
    return ("ok", bool(((got - want).abs() <= tolerance).all()), float(got[0]), want)


def late_rank_scenario(rank, size, port, report, gave_up, op, retrying_ranks, sockets):
    if op == "compressed":
        os.environ.update(QCCL_CODEC="int8", QCCL_MIN_BYTES="1024")
    if sockets:  # Gloo and the p2p engine, as across hosts, instead of shared memory
        os.environ["QCCL_FORCE_NETWORK"] = "1"
    init_loopback_rank(rank, size, port, TIMEOUT_S)
    late = size - 1
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    outcomes = [("call 0", _attempt(op, 0, rank, size)), ("get_error before", ("ok", True, backend.get_error().name))]
    if rank == late:
        # Arrives at call 1 once every other rank gave up on it.
        for event in gave_up:
            event.wait(WAIT_S)
        outcomes.append(("call 1", _attempt(op, 1, rank, size)))
    else:
        outcomes.append(("call 1", _attempt(op, 1, rank, size)))
        gave_up[rank].set()
        if rank in retrying_ranks:
            outcomes.append(("retry of call 1", _attempt(op, 1, rank, size)))
    outcomes.append(("call 2", _attempt(op, 2, rank, size)))
    # Point-to-point after the failure, with the next rank.
    peer = (rank + 1) % size
    buffer = torch.zeros(4)
    try:
        p2p = dist.isend(buffer, dst=peer) if rank % 2 == 0 else dist.irecv(buffer, src=(rank - 1) % size)
        p2p.wait(datetime.timedelta(seconds=TIMEOUT_S * 3))
        outcomes.append(("p2p after", ("ok", True)))
    except Exception as error:  # noqa: BLE001
        outcomes.append(("p2p after", ("raised", type(error).__name__, str(error))))
    outcomes.append(("get_error after", ("ok", True, backend.get_error().name)))
    report.put((rank, outcomes))
    dist.destroy_process_group()


def _run(op, size, retrying_ranks, sockets=False):
    ctx = mp.get_context("spawn")
    report = ctx.Queue()
    gave_up = [ctx.Event() for _ in range(size - 1)]
    codes = spawn_ranks(size, late_rank_scenario, (report, gave_up, op, retrying_ranks, sockets))
    assert codes == [0] * size, codes
    return dict(report.get(timeout=10) for _ in range(size))


# (op, ranks, ranks that retry, over sockets): one host goes through shared memory; the
# same calls over sockets are what ranks on several hosts run.
SCENARIOS = [(op, 2, (0,), sockets) for op in ("small", "large", "compressed", "broadcast") for sockets in (False, True)]
SCENARIOS += [("small", 2, (), False)]  # without a retry (sendrecv at 2 ranks: below)
# Three ranks: rank 0 retries, rank 1 goes straight on.
SCENARIOS += [(op, 3, (0,), False) for op in ("small", "large", "compressed", "broadcast", "sendrecv")]


@pytest.mark.parametrize(
    "op,size,retrying_ranks,sockets", SCENARIOS,
    ids=[f"{op}-{size}ranks-{'retry' if r else 'noretry'}{'-sockets' if net else ''}" for op, size, r, net in SCENARIOS])
def test_no_wrong_value_after_a_timeout(op, size, retrying_ranks, sockets):
    results = _run(op, size, retrying_ranks, sockets)
    late = size - 1
    for rank, outcomes in results.items():
        for what, outcome in outcomes:
            # The one rule that holds for every call: a value that comes back is right.
            assert outcome[0] == "raised" or outcome[1], (rank, what, outcome, results)
        by_name = dict(outcomes)
        assert by_name["call 0"][0] == "ok", (rank, by_name)
        if op == "sendrecv":
            continue  # below: the collective's failure and what follows it
        if rank != late:
            # Its own timeout, or, where another early rank timed out first, that rank's
            # notice (its shared-memory channel closed, or its GroupFailed message).
            first = by_name["call 1"]
            assert first[:2] == ("raised", "DistBackendError"), first
            assert any(why in first[2] for why in (" Timed out ", "closed its shared-memory channel",
                                                   "reported that the group failed")), first
        # After its first failure a rank raises for every call, naming the first failure.
        later = ["p2p after"] + ([] if rank == late else ["retry of call 1", "call 2"])
        for outcome in [by_name[k] for k in later if k in by_name]:
            assert outcome[:2] == ("raised", "DistBackendError"), (rank, outcome, results)
            assert "failed earlier" in outcome[2] and "create a new group" in outcome[2], outcome
        if rank == late:
            # Its call 2 is its first failure: the early ranks' notice (GroupFailed, or
            # their shared-memory channel closing), or at worst its own timeout.
            second = by_name["call 2"]
            assert second[:2] == ("raised", "DistBackendError"), second
            assert any(why in second[2] for why in ("failed earlier", "closed its shared-memory channel",
                                                    " Timed out ")), second
        # Backend.get_error(): nothing before, then the kind of the rank's first failure.
        assert by_name["get_error before"][2] == "SUCCESS", by_name
        first_failure = next(outcome[2] for _, outcome in outcomes if outcome[0] == "raised")
        assert by_name["get_error after"][2] == _error_kind(first_failure), (first_failure, by_name)


def _error_kind(message):
    """c10d's ErrorType for a rank's first failure, from its message (not from qccl's code)."""
    if any(why in message for why in ("reported that the group failed", "failed earlier",
                                      "closed its shared-memory channel")):
        return "REMOTE_ERROR"  # a peer failed first and told this rank
    return "TIMEOUT" if " Timed out " in message else "COMM_ERROR"


def test_a_receive_from_one_peer_that_timed_out_closes_the_pair():
    """As Gloo closes the pair on a timeout: the message that comes late is never taken by
    the next receive (it would answer the wrong call), and both sides' later sends and
    receives between the two ranks raise, naming the timeout."""
    results = _run("sendrecv", 2, (0,))
    early, late = dict(results[0]), dict(results[1])
    assert early["call 1"][:2] == ("raised", "DistBackendError") and " Timed out " in early["call 1"][2], early
    for outcome in (early["retry of call 1"], early["call 2"], early["p2p after"], late["p2p after"]):
        assert outcome[:2] == ("raised", "DistBackendError") and "was closed after a timeout" in outcome[2], results


def poll_rank(rank, size, port, report, polled):
    init_loopback_rank(rank, size, port, TIMEOUT_S)
    if rank == 1:
        polled.wait(WAIT_S)
        dist.send(torch.full((4,), 42.0), dst=0)
    else:
        outcomes = []
        for attempt in range(2):
            t = torch.zeros(4)
            try:
                dist.irecv(t).wait(datetime.timedelta(seconds=0.5 if attempt == 0 else 3 * TIMEOUT_S))  # from any source
                outcomes.append(("ok", t.tolist()))
            except Exception as error:  # noqa: BLE001
                outcomes.append(("raised", type(error).__name__, str(error)))
            polled.set()
        report.put(outcomes)
    t = torch.full((4,), float(rank + 1))
    dist.all_reduce(t)  # the group still works
    if rank == 0:
        report.put(t.tolist())
    dist.destroy_process_group()


def test_a_poll_from_any_source_that_timed_out_takes_no_message():
    """A receive from any source that timed out only withdraws: the next one takes the
    message that came late (the parameter server polls this way); the group goes on."""
    ctx = mp.get_context("spawn")
    report, polled = ctx.Queue(), ctx.Event()
    assert spawn_ranks(2, poll_rank, (report, polled)) == [0, 0]
    first, second = report.get(timeout=10)
    assert first[:2] == ("raised", "DistBackendError") and " Timed out " in first[2], first
    assert second == ("ok", [42.0] * 4), second
    assert report.get(timeout=10) == [3.0] * 4


def abort_notice_rank(rank, size, port, report, aborted, peer_done):
    init_loopback_rank(rank, size, port, 120)
    dist.all_reduce(torch.ones(4))
    if rank == 0:
        # Only once the peer's call is done too: an abort may fail a call still running
        # on a peer, which is not what this test is about.
        peer_done.wait(WAIT_S)
        dist.group.WORLD._get_backend(torch.device("cpu")).abort()
        aborted.set()
        report.put((rank, "aborted"))
        return
    peer_done.set()
    aborted.wait(WAIT_S)
    start = datetime.datetime.now()
    try:
        dist.all_reduce(torch.ones(4))
        report.put((rank, ("ok",)))
    except Exception as error:  # noqa: BLE001
        report.put((rank, (type(error).__name__, str(error), (datetime.datetime.now() - start).total_seconds())))
    dist.destroy_process_group()


def test_an_abort_fails_the_peers_next_call_at_once():
    """The peer of a rank that aborted does not wait out its (long) timeout."""
    ctx = mp.get_context("spawn")
    report, aborted, peer_done = ctx.Queue(), ctx.Event(), ctx.Event()
    spawn_ranks(2, abort_notice_rank, (report, aborted, peer_done))
    results = dict(report.get(timeout=10) for _ in range(2))
    kind, message, seconds = results[1]
    assert kind == "DistBackendError", results
    assert "rank 0 aborted the group" in message, message
    assert seconds < 60, seconds  # the group timeout is 120 s
