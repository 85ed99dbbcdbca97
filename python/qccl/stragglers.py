"""qccl.straggler_report: which ranks made the others wait, and how long.

Every collective's cross-rank check waits for every peer's record of the same call, so it
knows how long this rank waited for each peer (csrc/qccl/backend/peer_waits.h): a peer
that reaches its calls late makes the others wait there. qccl.stats()["peer_waits"] holds
this rank's numbers; straggler_report gathers every rank's and names the ranks the others
waited for. Both count from the group's creation or qccl.reset_stats(). Calls with
QCCL_VERIFY=0 have no check and are not counted.
"""

import dataclasses
import statistics

import torch
import torch.distributed as dist

from ._extension import load
from .compression import _backend


def _bucket_bounds(bucket: int):
    """The [low, high) seconds of one histogram bucket (backend/peer_waits.h)."""
    if bucket == 0:
        return 0.0, 1e-6
    per_doubling = load().PEER_WAIT_BUCKETS_PER_DOUBLING
    return 1e-6 * 2 ** ((bucket - 1) / per_doubling), 1e-6 * 2 ** (bucket / per_doubling)


@dataclasses.dataclass
class RankWaits:
    """How long the other ranks' checks waited for one rank."""
    rank: int
    times: int  # waits of at least min_wait, summed over the ranks that waited
    seconds: float  # every wait, summed over the ranks that waited
    median_seconds: float  # of the waits of at least min_wait (0.0: none)
    p90_seconds: float
    longest_seconds: float
    seconds_by_rank: dict  # {rank that waited: seconds}


@dataclasses.dataclass
class StragglerReport:
    ranks: list  # a RankWaits per rank, in rank order
    stragglers: list  # the ranks named, longest total first
    min_wait: float

    def __str__(self):
        lines = []
        for rank in self.stragglers:
            w = self.ranks[rank]
            by = ", ".join(f"rank {r} {s:.3g} s" for r, s in sorted(w.seconds_by_rank.items()))
            lines.append(f"rank {rank} made the others wait {w.times} times, {w.seconds:.3g} s in all "
                         f"(median {w.median_seconds * 1e3:.3g} ms, 90th percentile {w.p90_seconds * 1e3:.3g} ms, "
                         f"longest {w.longest_seconds * 1e3:.3g} ms); waiting: {by}")
        return "\n".join(lines) if lines else f"no rank made the others wait (waits of at least {self.min_wait:g} s)"


def _quantile(histogram, start, q):
    """The q-quantile of the waits in buckets >= start, as the geometric middle of its bucket."""
    counts = histogram[start:]
    total = sum(counts)
    if total == 0:
        return 0.0
    seen = 0
    for offset, count in enumerate(counts):
        seen += count
        if seen >= q * total:
            low, high = _bucket_bounds(start + offset)
            return (low * high) ** 0.5 if low > 0 else high
    return 0.0


def straggler_report(group=None, min_wait: float = 1e-3, factor: float = 3.0) -> StragglerReport:
    """Gathers every rank's check waits (a collective: every rank of `group`, a process
    group or None for the default one, calls it) and names the ranks that made the others
    wait.

    For each rank: how often the others waited at least `min_wait` seconds for it, how
    long in all, the median and 90th percentile of those waits (read off a histogram:
    within about 19%), the longest, and who waited. A rank is named when the others waited
    for it at least `factor` times as long in all as for the median of the other ranks,
    and at least 10 x min_wait: on a busy machine every rank is late now and then, a
    straggler far more often or far longer.
    """
    backend = _backend(group)
    mine = backend.peer_waits()  # before the gather, whose own check adds to it
    size = len(mine)
    rows = torch.tensor([[w["checks"], w["seconds"], w["longest_seconds"], *w["histogram"]] for w in mine],
                        dtype=torch.float64)
    everyone = torch.empty((size * size, rows.shape[1]), dtype=torch.float64)
    dist.all_gather_into_tensor(everyone, rows, group=group)
    everyone = everyone.view(size, size, -1)  # [rank that waited, rank waited for, fields]
    buckets = rows.shape[1] - 3
    counted_from = next((b for b in range(buckets) if _bucket_bounds(b)[0] >= min_wait), buckets)
    ranks = []
    for target in range(size):
        waiters = [waiter for waiter in range(size) if waiter != target]
        histogram = everyone[waiters, target, 3:].sum(0).long().tolist() if waiters else [0] * buckets
        ranks.append(RankWaits(
            rank=target,
            times=sum(histogram[counted_from:]),
            seconds=float(everyone[waiters, target, 1].sum()) if waiters else 0.0,
            median_seconds=_quantile(histogram, counted_from, 0.5),
            p90_seconds=_quantile(histogram, counted_from, 0.9),
            longest_seconds=float(everyone[waiters, target, 2].max()) if waiters else 0.0,
            seconds_by_rank={waiter: float(everyone[waiter, target, 1]) for waiter in waiters},
        ))
    def others_median(rank):
        others = [o.seconds for o in ranks if o is not rank]
        return statistics.median(others) if others else 0.0

    named = [r for r in ranks if r.seconds >= 10 * min_wait and r.seconds >= factor * others_median(r)]
    return StragglerReport(ranks=ranks, stragglers=[r.rank for r in sorted(named, key=lambda r: -r.seconds)],
                           min_wait=min_wait)

