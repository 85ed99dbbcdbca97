"""Compression controls of a qccl group: counters and exact regions (its checkpoint state:
checkpoint.py)."""

import contextlib

import torch
import torch.distributed as dist

from ._extension import load


def _backend(group):
    """The qccl backend behind `group`: a process group (None: the default one), a qccl
    backend itself (qccl.create_backend), or a wrapper around either: torch's
    _ProcessGroupWrapper (TORCH_DISTRIBUTED_DEBUG=DETAIL), torchft's process groups, and
    a reconfigurable group (its current members')."""
    found = group if group is not None else dist.group.WORLD
    if found is None:
        raise RuntimeError("qccl: no default process group; call init_process_group first")
    qccl_backend = load().ProcessGroupQCCL
    for _ in range(8):  # wrappers of wrappers, never a cycle
        if isinstance(found, qccl_backend):
            return found
        inner = _unwrapped(found)
        if inner is None:
            break
        found = inner
    raise ValueError(
        f"qccl: {type(group).__name__} reduces CPU tensors with {type(found).__name__}, not qccl"
    )


def _unwrapped(group):
    """What `group` wraps or delegates CPU tensors to, or None."""
    if isinstance(group, load().ReconfigurableGroup):
        return group.current()  # the current members' group
    for attribute in ("wrapped_pg", "parent", "_pg"):  # torch's wrapper; torchft's
        inner = getattr(group, attribute, None)
        if inner is not None and inner is not group:
            return inner
    if isinstance(group, dist.ProcessGroup):
        try:
            return group._get_backend(torch.device("cpu"))
        except RuntimeError:
            return None
    return None


def _with_ratio(counters: dict) -> dict:
    wire = counters["wire_bytes"]
    counters["compression_ratio"] = counters["exact_wire_bytes"] / wire if wire else 1.0
    return counters


def stats(group=None) -> dict:
    """Counters of the group's allreduces since it was created (or reset_stats()).

    calls, tensors, compressed_tensors, exact_tensors (per reason), logical_bytes (of
    the tensors), wire_bytes (this rank sent; node_wire_bytes of them to its own node,
    with hierarchical compression), exact_wire_bytes (it would have sent uncompressed),
    compression_ratio (exact_wire_bytes / wire_bytes), and seconds spent encoding,
    communicating and decoding, plus the group's settings. The same counters of its
    reduce-scatters and all-gathers (every form of each) are under "reduce_scatter" and
    "all_gather" (logical_bytes: the full tensor, every rank's shard). "calls_in_check"
    counts the group's small exact calls of every kind (all_reduce, broadcast,
    all_gather, reduce_scatter) done from what their cross-rank check carried, with no
    exchange of their own. "peer_waits" says, per peer rank, how many cross-rank checks
    waited for it, how long in all and at most ("checks", "seconds", "longest_seconds";
    qccl.straggler_report gathers every rank's). "shared_memory" says whether this rank
    goes through shared memory ("used"), with how many ranks ("ranks": the whole group
    when its ranks share one host; the rank's node in a hierarchical group, for the node
    stages), and how many bytes it published there ("bytes", since the group was
    created).
    """
    backend = _backend(group)
    counters = _with_ratio(backend.compression_stats())
    counters["calls_in_check"] = backend.calls_in_check()
    counters["peer_waits"] = {peer: {key: waits[key] for key in ("checks", "seconds", "longest_seconds")}
                              for peer, waits in enumerate(backend.peer_waits()) if waits["checks"]}
    counters["reduce_scatter"] = _with_ratio(backend.reduce_scatter_stats())
    counters["all_gather"] = _with_ratio(backend.all_gather_stats())
    shm_ranks = backend.shared_memory_ranks()
    counters["shared_memory"] = {"used": shm_ranks > 0, "ranks": shm_ranks, "bytes": backend.shared_memory_bytes()}
    counters["settings"] = backend.settings()
    return counters


def mark_step() -> None:
    """Starts a new training step for every qccl group of this process.

    Compressed reduce-scatters (FSDP2's gradients) keep their error-feedback residual by
    their place in the step: the k-th reduce-scatter of a step continues from the k-th of
    the step before. qccl calls this after every torch.optim optimizer step; a training
    loop that updates its parameters otherwise calls it once per step."""
    load().mark_step()


_step_hook = None


def watch_optimizer_steps() -> None:
    """Calls mark_step() after every torch.optim optimizer step (once per process)."""
    global _step_hook
    if _step_hook is None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        _step_hook = register_optimizer_step_post_hook(lambda *_: mark_step())


def reset_stats(group=None) -> None:
    _backend(group).reset_compression_stats()


@contextlib.contextmanager
def exact(group=None):
    """Allreduces issued inside this block are reduced exactly, whatever the codec.

    Every rank must enter and leave the block at the same point of its program (qccl
    checks, and raises on a mismatch)."""
    backend = _backend(group)
    backend.enter_exact()
    try:
        yield
    finally:
        backend.exit_exact()
