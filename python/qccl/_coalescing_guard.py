"""Closes a coalescing window that an exception left open, for qccl groups.

torch's ``_coalescing_manager`` (behind ``batch_isend_irecv``, and what users call to fuse
collectives) opens a window and has no try/finally around its body. When an op inside it
raises (a bad peer, a sparse tensor), torch keeps the group in its coalescing state, and
from then on every ``all_reduce``, ``all_gather_into_tensor`` and ``reduce_scatter_tensor``
on that group is only recorded for a fusion that never comes: it returns at once with the
tensor unreduced, a silently wrong result. qccl wraps the manager so that an exception
closes torch's window and qccl's own before it propagates. Groups served by another
backend keep torch's behaviour.
"""

import contextlib
import functools

import torch
import torch.distributed as dist
from torch.distributed import distributed_c10d as c10d

from ._extension import load


def install() -> None:
    """Wraps torch's coalescing manager once; calling it again is harmless."""
    original = c10d._coalescing_manager
    if getattr(original, "_qccl_closes_on_error", False):
        return

    @contextlib.contextmanager
    @functools.wraps(original)
    def coalescing_manager(group=None, device=None, async_ops=False):
        try:
            with original(group, device, async_ops) as manager:
                yield manager
        except BaseException:
            _close_after_error(group or c10d._get_default_group(), device)
            raise

    coalescing_manager._qccl_closes_on_error = True
    c10d._coalescing_manager = coalescing_manager
    if getattr(dist, "_coalescing_manager", None) is original:
        dist._coalescing_manager = coalescing_manager


def _close_after_error(group, device) -> None:
    try:
        backend = group._get_backend(device or torch.device("cpu"))
    except RuntimeError:  # no backend for that device: not a window qccl knows
        return
    if isinstance(backend, load().ReconfigurableGroup):
        backend = backend.current()
    if not isinstance(backend, load().ProcessGroupQCCL):
        return
    c10d._world.pg_coalesce_state.pop(group, None)
    backend.abandon_coalescing()
