"""Restarts: torchrun hands a restarted job the same store, still holding the previous
attempt's keys under the names torch gives each group. qccl's transports keep their keys
under a prefix of each creation's own, agreed by all ranks (docs/design.md, "Restarts"):
a job whose rank crashes resumes after one restart every time, and the agreement holds
whatever earlier creations on the store left behind."""

import datetime
import pathlib
import subprocess
import sys
import threading

import pytest
import torch.distributed as dist

from qccl._extension import load

WORKER = pathlib.Path(__file__).resolve().parent / "restart_worker.py"
JOBS = 5


def test_a_job_whose_rank_crashes_resumes_after_one_restart_every_time(tmp_path):
    for job in range(JOBS):
        out = tmp_path / f"job{job}"
        out.mkdir()
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", "2", "--max-restarts", "1", "--monitor-interval", "0.1",
            str(WORKER), str(out),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        log = f"job {job} of {JOBS}:\n{result.stdout}{result.stderr}"
        assert result.returncode == 0, log
        # Attempt 0 ended in the crash; attempt 1, the only restart, finished on both ranks.
        finished = sorted(p.name for p in out.iterdir())
        assert finished == ["attempt1.rank0", "attempt1.rank1", "crashed"], log


def _agree(port, size, ranks, timeout_s):
    """Runs the creation handshake for `ranks` of a group of `size`, one thread and one
    store client each; returns {rank: prefix or the exception it raised}."""
    outcomes = {}

    def run(rank):
        store = dist.PrefixStore(
            "default_pg/0/cpu/", dist.TCPStore("127.0.0.1", port, is_master=False)
        )
        try:
            outcomes[rank] = load().fresh_store_prefix(
                store, rank, size, datetime.timedelta(seconds=timeout_s)
            )
        except Exception as error:  # noqa: BLE001 - the test inspects it
            outcomes[rank] = error

    threads = [threading.Thread(target=run, args=(r,)) for r in ranks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def _agreed(outcomes):
    prefixes = set(outcomes.values())
    assert len(prefixes) == 1 and isinstance(next(iter(prefixes)), str), outcomes
    return prefixes.pop()


@pytest.fixture
def server():
    """A store server, as torchrun's agent keeps one for the whole job."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    yield store.port


@pytest.mark.parametrize("size", [1, 2, 4])
def test_each_creation_gets_a_prefix_of_its_own_agreed_by_all_ranks(server, size):
    # Threads started rank 0 first, then last: it tends to come before, then after the
    # others' requests, and must answer both kinds.
    orders = [range(size), reversed(range(size)), range(size)]
    prefixes = [_agreed(_agree(server, size, list(order), timeout_s=60)) for order in orders]
    assert len(set(prefixes)) == len(prefixes), prefixes


def test_creations_that_died_halfway_leave_nothing_the_next_one_takes(server):
    first = _agreed(_agree(server, 4, range(4), timeout_s=60))

    # Ranks 1 and 3 never come: rank 0 names them; rank 2 had its answer, and a prefix.
    partial = _agree(server, 4, [0, 2], timeout_s=3)
    assert isinstance(partial[0], dist.DistBackendError) and isinstance(partial[2], str), partial
    assert str(partial[0]).startswith("qccl: ") and "rank 0" in str(partial[0]), partial[0]
    assert "ranks 1, 3 did not join" in str(partial[0]), partial[0]
    # Only rank 1 comes: it names the rank that did not answer it.
    alone = _agree(server, 4, [1], timeout_s=1)[1]
    assert isinstance(alone, dist.DistBackendError), alone
    assert "rank 1" in str(alone) and "rank 0 did not answer" in str(alone), alone

    again = _agreed(_agree(server, 4, [3, 2, 1, 0], timeout_s=60))
    shrunk = _agreed(_agree(server, 2, [1, 0], timeout_s=60))  # an elastic restart with fewer ranks
    assert len({first, again, shrunk, partial[2]}) == 4, (first, again, shrunk, partial)
