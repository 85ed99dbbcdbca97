"""The trainer test_restart.py runs under torchrun: it creates a qccl group and a split of
it, checks an all_reduce on each against a float64 sum, and in the first attempt rank 1 then dies (os._exit, as
a crashed trainer would) so that torchrun restarts both ranks. Each rank leaves a file in
the directory named by argv[1] for the test to read: "crashed", or "attempt<k>.rank<r>"
once attempt k finished on rank r.

A watchdog ends a rank that is stuck and prints where: without it a hang in the restarted
attempt would only end at the test's own timeout.
"""

import datetime
import faulthandler
import os
import pathlib
import sys

import torch
import torch.distributed as dist

import qccl  # noqa: F401 - registers "qccl" even where entry points are off

STUCK_AFTER_S = 30


def main():
    out = pathlib.Path(sys.argv[1])
    faulthandler.dump_traceback_later(STUCK_AFTER_S, exit=True)
    attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    rank = int(os.environ["RANK"])
    dist.init_process_group("qccl", timeout=datetime.timedelta(seconds=STUCK_AFTER_S))
    size = dist.get_world_size()

    expected = torch.arange(8, dtype=torch.float64) * sum(r + 1 for r in range(size))
    # The default group, and a group made by split (DeviceMesh's way), whose keys must not
    # meet the crashed attempt's either.
    split = dist.split_group(split_ranks=[list(range(size))])
    for group in (None, split):
        values = torch.arange(8, dtype=torch.float32) * (rank + 1)
        dist.all_reduce(values, group=group)
        assert torch.equal(values.double(), expected), (values, expected)

    if attempt == 0 and rank == 1:
        (out / "crashed").write_text("rank 1 died after the group was up")
        os._exit(3)
    dist.barrier()  # in attempt 0, rank 0 fails here: its peer is gone
    dist.destroy_process_group()
    (out / f"attempt{attempt}.rank{rank}").write_text("ok")


if __name__ == "__main__":
    main()
