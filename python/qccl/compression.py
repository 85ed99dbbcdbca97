"""Compression controls of a qccl group: counters and exact regions (its checkpoint state:
checkpoint.py)."""

import contextlib

import torch
import torch.distributed as dist

from ._extension import load


def _backend(group):
    """The qccl backend that serves `group`'s CPU tensors."""
    group = group if group is not None else dist.group.WORLD
    if group is None:
        raise RuntimeError("qccl: no default process group; call init_process_group first")
    backend = group._get_backend(torch.device("cpu"))
    if not isinstance(backend, load().ProcessGroupQCCL):
        raise ValueError(
            f"qccl: this group reduces CPU tensors with {type(backend).__name__}, not qccl "
            "(with TORCH_DISTRIBUTED_DEBUG=DETAIL torch wraps backends; unset it to use "
            "qccl's own API)"
        )
    return backend


def stats(group=None) -> dict:
    """Counters of the group's allreduces since it was created (or reset_stats()).

    calls, tensors, compressed_tensors, exact_tensors (per reason), logical_bytes (of the
    tensors), wire_bytes (this rank sent), exact_wire_bytes (it would have sent
    uncompressed), compression_ratio (exact_wire_bytes / wire_bytes), and seconds spent
    encoding, communicating and decoding, plus the group's settings.
    """
    backend = _backend(group)
    counters = backend.compression_stats()
    wire = counters["wire_bytes"]
    counters["compression_ratio"] = counters["exact_wire_bytes"] / wire if wire else 1.0
    counters["settings"] = backend.settings()
    return counters


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
