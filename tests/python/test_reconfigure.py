"""c10d's reconfigure on qccl (issue 30): a group made with enable_reconfigure=True gets
its members from dist._reconfigure, in place. Bad handles, a reused uuid and a missing
handle raise and leave the group as it was; a rank SIGKILLed with a call in flight is
replaced by a new process, the survivors' pending call fails at once, and every op of the
healed group gives what arithmetic says, over shared memory and over sockets."""

import datetime
import json
import multiprocessing as mp
import os
import signal

import pytest
import torch
import torch.distributed as dist

import qccl
from test_shrink import ops_against_arithmetic
from world import free_port

SIZE = 3
DEAD = 1  # its place goes to a new process
TIMEOUT_S = 30  # a test that waited for it would fail: reconfigure must not wait


def _join(port, rank, is_master):
    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, is_master=is_master, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=60))
    dist.init_process_group("qccl", store=store, rank=rank, world_size=SIZE, enable_reconfigure=True,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S),
                            pg_options=qccl.Options(codec="int8"))  # the ops below stay under min_bytes
    return store


def _handles(store, round_, who, handle, members):
    """Every member's handle for `round_`, in the order of `members` (names)."""
    store.set(f"handle/{round_}/{who}", handle)
    return [store.get(f"handle/{round_}/{m}").decode() for m in members]


def _raises(action, words):
    try:
        action()
    except (ValueError, RuntimeError) as error:  # DistBackendError is a RuntimeError
        assert words in str(error) and "qccl" in str(error), str(error)
        return
    raise AssertionError(f"no error; expected one saying {words!r}")


def member(process, port, report, sockets):
    if sockets:
        os.environ["QCCL_FORCE_NETWORK"] = "1"
    try:
        store = _join(port, process, is_master=process == 0)
        assert dist._supports_reconfigure()
        _raises(lambda: dist.all_reduce(torch.ones(2)), "no members yet")
        mine = dist._get_reconfigure_handle()
        processes = [str(p) for p in range(SIZE)]
        handles = _handles(store, 1, process, mine, processes)
        dist._reconfigure(uuid=1, handles=handles).wait()
        assert (dist.get_rank(), dist.get_world_size()) == (process, SIZE)
        matched = ops_against_arithmetic(dist.get_rank(), SIZE)

        # Bad arguments raise and leave the group as it was.
        _raises(lambda: dist._reconfigure(uuid=2, handles=handles[:-1] + ["gloo:1:-1:1:localhost:1"]),
                "is not a qccl handle")
        _raises(lambda: dist._reconfigure(uuid=2, handles=[h for h in handles if h != mine]), "is not among")
        _raises(lambda: dist._reconfigure(uuid=2, handles=handles + handles[:1]), "more than once")
        _raises(lambda: dist._reconfigure(uuid=1, handles=handles), "was used before")
        matched += ops_against_arithmetic(dist.get_rank(), SIZE)

        # The same members again: this rank keeps its place, so its compression state
        # (the calls that seed int8's rounding, error feedback) carries over.
        dist.all_reduce(torch.randn(1 << 16))  # compressed: 256 KiB
        state = qccl.state_dict()
        dist._reconfigure(uuid=2, handles=handles).wait()
        carried = qccl.state_dict()
        same_state = state["calls"] == carried["calls"] and all(
            torch.equal(a, b) for a, b in zip(state["residuals"], carried["residuals"]))

        # The handles in reverse: ranks change places.
        dist._reconfigure(uuid=3, handles=list(reversed(handles))).wait()
        assert dist.get_rank() == SIZE - 1 - process
        matched += ops_against_arithmetic(dist.get_rank(), SIZE)

        if process == DEAD:
            store.set("dying", "1")
            os.kill(os.getpid(), signal.SIGKILL)
        store.wait(["dying"])
        pending = dist.all_reduce(torch.ones(4), async_op=True)  # in flight: the dead rank never joins it
        members = [str(p) for p in range(SIZE) if p != DEAD] + ["new"]
        dist._reconfigure(uuid=4, handles=_handles(store, 4, process, mine, members)).wait()
        # It fails, never hangs: through shared memory the dead process may be noticed
        # first, else the reconfigure fails it.
        _raises(pending.wait, "qccl: ")
        matched += ops_against_arithmetic(dist.get_rank(), SIZE)
        report.put((process, matched, same_state, qccl.stats()["calls"] > 0))
    except BaseException as error:  # noqa: BLE001 - reported to the test
        report.put((process, repr(error), None, None))
        raise


def newcomer(port, report, sockets):
    """Takes the dead rank's place: joins the store, then the survivors' reconfigure."""
    if sockets:
        os.environ["QCCL_FORCE_NETWORK"] = "1"
    try:
        torch.set_num_threads(1)
        client = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=datetime.timedelta(seconds=60))
        client.wait(["dying"])
        store = _join(port, SIZE - 1, is_master=False)
        members = [str(p) for p in range(SIZE) if p != DEAD] + ["new"]
        dist._reconfigure(uuid=4, handles=_handles(store, 4, "new", dist._get_reconfigure_handle(), members)).wait()
        report.put(("new", ops_against_arithmetic(dist.get_rank(), SIZE), True, True))
    except BaseException as error:  # noqa: BLE001
        report.put(("new", repr(error), None, None))
        raise


@pytest.mark.parametrize("sockets", [False, True], ids=["shm", "sockets"])
def test_reconfigure_heals_in_place_after_a_rank_is_killed(sockets):
    ctx = mp.get_context("spawn")
    report = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=member, args=(p, port, report, sockets)) for p in range(SIZE)]
    procs.append(ctx.Process(target=newcomer, args=(port, report, sockets)))
    for p in procs:
        p.start()
    results = {}
    for _ in range(SIZE):  # the dead rank reports nothing
        who, matched, same_state, counted = report.get(timeout=180)
        results[who] = (matched, same_state, counted)
    for p in procs:
        p.join(timeout=60)
        if p.is_alive():
            p.kill()
    for who, (matched, same_state, counted) in results.items():
        assert isinstance(matched, list), f"{who}: {matched}"
        assert all(ok for _, ok in matched), f"{who}: {[what for what, ok in matched if not ok]} differ"
        assert same_state, f"{who}: the compression state did not carry over"
        assert counted, f"{who}: qccl.stats() did not count the reconfigured group's calls"
