"""The collectives `python -m qccl.bench` times, each with its float64 reference.

Sizes follow nccl-tests: `nbytes` is the larger of a rank's input and output buffer
(for allgather the gathered output, for reduce_scatter the input), and busbw is algbw
times the collective's factor, so that busbw compares with the link's bandwidth whatever
the world size.

Every rank's input is random normal data drawn from a generator seeded with its rank, so
any rank can recompute any other rank's input to build the exact result in float64.
"""

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist


def rank_input(rank: int, count: int, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000 + rank)
    return torch.randn(count, generator=generator).to(dtype)


@dataclass(frozen=True)
class Collective:
    name: str
    bus_factor: Callable[[int], float]  # busbw / algbw for a world size
    compressible: bool  # whether qccl codecs change what this collective sends
    # (rank, world, count, dtype) -> (input, output): the buffers one call works on.
    buffers: Callable
    # (input, output, group, rank, world) -> None: one synchronous call.
    run: Callable
    # (rank, world, count, dtype) -> float64 tensor: what `output` must hold after one call.
    expected: Callable


def _same_size(rank, world, count, dtype):
    return rank_input(rank, count, dtype), torch.empty(count, dtype=dtype)


def _all_inputs(world, count, dtype):
    """Every rank's input, as float64: the values the ranks really hold, exactly."""
    return [rank_input(r, count, dtype).double() for r in range(world)]


def _allreduce(inp, out, group, rank, world):
    out.copy_(inp)  # in place on a fresh copy: the input stays what the reference assumes
    dist.all_reduce(out, group=group)


def _allgather_buffers(rank, world, count, dtype):
    return rank_input(rank, count // world, dtype), torch.empty(count, dtype=dtype)


def _reduce_scatter_buffers(rank, world, count, dtype):
    return rank_input(rank, count, dtype), torch.empty(count // world, dtype=dtype)


def _broadcast(inp, out, group, rank, world):
    if rank == 0:
        out.copy_(inp)
    dist.broadcast(out, group_src=0, group=group)


def _sendrecv(inp, out, group, rank, world):
    ops = [
        dist.P2POp(dist.isend, inp, group=group, group_peer=(rank + 1) % world),
        dist.P2POp(dist.irecv, out, group=group, group_peer=(rank - 1) % world),
    ]
    for work in dist.batch_isend_irecv(ops):
        work.wait()


def _alltoall_expected(rank, world, count, dtype):
    shard = count // world
    return torch.cat([x[rank * shard:(rank + 1) * shard] for x in _all_inputs(world, count, dtype)])


COLLECTIVES = {
    c.name: c
    for c in [
        Collective(
            "allreduce", lambda n: 2 * (n - 1) / n, True, _same_size, _allreduce,
            lambda rank, world, count, dtype: torch.stack(_all_inputs(world, count, dtype)).sum(0),
        ),
        Collective(
            "allgather", lambda n: (n - 1) / n, True, _allgather_buffers,
            lambda inp, out, group, rank, world: dist.all_gather_into_tensor(out, inp, group=group),
            lambda rank, world, count, dtype: torch.cat(_all_inputs(world, count // world, dtype)),
        ),
        Collective(
            "reduce_scatter", lambda n: (n - 1) / n, True, _reduce_scatter_buffers,
            lambda inp, out, group, rank, world: dist.reduce_scatter_tensor(out, inp, group=group),
            lambda rank, world, count, dtype:
                torch.stack(_all_inputs(world, count, dtype)).sum(0).chunk(world)[rank],
        ),
        Collective(
            "alltoall", lambda n: (n - 1) / n, False, _same_size,
            lambda inp, out, group, rank, world: dist.all_to_all_single(out, inp, group=group),
            _alltoall_expected,
        ),
        Collective(
            "broadcast", lambda n: 1.0, False, _same_size, _broadcast,
            lambda rank, world, count, dtype: rank_input(0, count, dtype).double(),
        ),
        Collective(
            "sendrecv", lambda n: 1.0, True, _same_size, _sendrecv,
            lambda rank, world, count, dtype: rank_input((rank - 1) % world, count, dtype).double(),
        ),
    ]
}


def relative_error(output: torch.Tensor, expected: torch.Tensor) -> float:
    """Relative L2 error of `output` against the float64 `expected`."""
    diff = output.to(torch.float64) - expected
    norm = expected.norm()
    return float(diff.norm() / norm) if norm > 0 else float(diff.norm())
