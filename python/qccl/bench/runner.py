"""One rank's side of a benchmark run: time every collective, size and backend.

Backends are measured in alternation (round r times every backend before round r+1), so a
slow moment of a noisy machine hits all of them alike. Each sample is one synchronous
call; a call's time is the slowest rank's, and the reported time is the median sample.
"""

import statistics
import time

import torch
import torch.distributed as dist

from .backends import Backend
from .collectives import COLLECTIVES, relative_error


# Where qccl.stats() counts each compressible collective (None: the top level).
_COUNTERS = {"allreduce": None, "reduce_scatter": "reduce_scatter", "allgather": "all_gather"}


def iterations_per_round(nbytes: int, requested: int | None) -> int:
    """Enough calls to take a stable median of small sizes without hours at large ones."""
    if requested:
        return requested
    return max(1, min(50, (64 << 20) // nbytes))


def slowest_rank(samples: list[float]) -> list[float]:
    """Per sample, the slowest rank's time (collective over the default group: every
    rank passes as many samples)."""
    mine = torch.tensor(samples, dtype=torch.float64)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    return torch.stack(every).amax(0).tolist()


def _time_calls(collective, backend, inp, out, rank, world, calls) -> list[float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        collective.run(inp, out, backend.group, rank, world)
        backend.synchronize()
        samples.append(time.perf_counter() - start)
    return samples


def measure(collective_name, nbytes, backends: list[Backend], args, link_bits_per_s=None):
    """Rows (dicts) for one collective at one size, one per backend; complete on rank 0."""
    import qccl

    collective = COLLECTIVES[collective_name]
    rank, world = dist.get_rank(), dist.get_world_size()
    element = torch.empty((), dtype=args.dtype).element_size()
    count = max(world, nbytes // element // world * world)
    calls = iterations_per_round(count * element, args.iters)
    if not collective.compressible:
        backends = [b for b in backends if b.codec == "none"]
    elif collective_name == "sendrecv":  # int4 is allreduce-only
        backends = [b for b in backends if b.codec != "int4"]

    cpu_in, cpu_out = collective.buffers(rank, world, count, args.dtype)
    buffers = {  # every backend its own buffers, so each row's error is its own result
        b.name: (cpu_in.to(b.device, copy=True), cpu_out.to(b.device, copy=True)) for b in backends
    }
    samples = {b.name: [] for b in backends}
    for b in backends:
        _time_calls(collective, b, *buffers[b.name], rank, world, args.warmup)
        if b.is_qccl:
            qccl.reset_stats(b.group)
    for _ in range(args.rounds):
        for b in backends:
            dist.barrier()  # starts every rank together, outside the timed calls
            samples[b.name] += _time_calls(collective, b, *buffers[b.name], rank, world, calls)

    expected = collective.expected(rank, world, count, args.dtype) if rank == 0 else None
    rows = []
    for b in backends:
        seconds = statistics.median(slowest_rank(samples[b.name]))
        algbw = count * element / seconds / 1e9
        wire = None
        if b.is_qccl and collective_name in _COUNTERS:
            counters = qccl.stats(b.group)
            if _COUNTERS[collective_name]:
                counters = counters[_COUNTERS[collective_name]]
            # A hierarchical group's exact traffic inside its node stays off the slow links.
            wire = (counters["wire_bytes"] - counters["node_wire_bytes"]) / max(1, counters["calls"])
        elif b.is_qccl and collective_name == "sendrecv":
            wire = _p2p_wire_bytes(b.group, buffers[b.name][0])
        rows.append({
            "collective": collective_name,
            "backend": b.name,
            "device": b.device.type,
            "ranks": world,
            "size": count * element,
            "count": count,
            "type": str(args.dtype).removeprefix("torch."),
            "redop": "sum" if collective_name in ("allreduce", "reduce_scatter") else "none",
            "time_us": seconds * 1e6,
            "algbw_GBps": algbw,
            "busbw_GBps": algbw * collective.bus_factor(world),
            "wire_bytes_per_rank": wire,
            "rel_error": relative_error(buffers[b.name][1].cpu(), expected) if rank == 0 else None,
            "samples": len(samples[b.name]),
            "bound_us": _link_bound_us(collective, count * element, wire, world, link_bits_per_s),
        })
    return rows


def _p2p_wire_bytes(group, tensor):
    """The payload one send puts on the wire with the group's p2p codec (the codec's
    documented size; the 96-byte header and the status reply are left out)."""
    import qccl
    from qccl.testing import codecs

    settings = qccl.stats(group)["settings"]
    codec, block = settings["p2p_codec"], int(settings["block"])
    compressible = tensor.dtype in (torch.float32, torch.float64) and tensor.numel() >= block
    if codec == "none" or not compressible:
        return tensor.numel() * tensor.element_size()
    return codecs.encoded_bytes(codec, block, tensor.numel())


def _link_bound_us(collective, nbytes, wire_bytes, world, link_bits_per_s):
    """The shortest time the shaped link allows: what a rank must send / link rate.

    A rank sends bus_factor x nbytes uncompressed (2(N-1)/N for allreduce); a qccl
    allreduce sends what its counters measured."""
    if not link_bits_per_s:
        return None
    sent = wire_bytes if wire_bytes is not None else nbytes * collective.bus_factor(world)
    return sent * 8 / link_bits_per_s * 1e6
