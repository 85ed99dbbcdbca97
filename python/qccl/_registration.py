"""Registers "qccl" with torch.distributed and creates one backend per process group."""

import os

import torch
import torch.distributed as dist

from ._extension import load

BACKEND_NAME = "qccl"


def _create_backend(backend_opts, pg_options):
    """The creator torch calls (extended API) for every group that uses qccl.

    qccl's CPU transport is Gloo: a ProcessGroupGloo on the same store, rank and size,
    created here because torch wheels ship no Gloo headers to build one from C++. CUDA
    tensors go through a ProcessGroupNCCL made the same way (docs/cuda.md). Their keys go
    under a prefix of this creation's own, agreed by all ranks: torchrun hands a restarted
    job the same store, still holding the previous attempt's keys under the names torch
    gives this group (docs/design.md, "Restarts").
    """
    from .options import Options

    if pg_options is None:
        pg_options = Options()
    if not isinstance(pg_options, Options):
        raise TypeError(
            f"qccl: pg_options must be a qccl.Options, not {type(pg_options).__name__}"
        )
    rank, size, timeout = backend_opts.group_rank, backend_opts.group_size, backend_opts.timeout
    extension = load()
    prefix = extension.fresh_store_prefix(backend_opts.store, rank, size, timeout)
    store = dist.PrefixStore(prefix, backend_opts.store)
    gloo = dist.ProcessGroupGloo(dist.PrefixStore("gloo/", store), rank, size, _gloo_options(timeout))
    nccl = _nccl_transport(store, rank, size, timeout, pg_options)
    return extension.ProcessGroupQCCL(gloo, rank, size, timeout, pg_options.settings(), nccl, store)


def _gloo_options(timeout):
    """Gloo's options as ProcessGroupGloo(store, rank, size, timeout) makes them (one device
    per GLOO_SOCKET_IFNAME interface, or the default one), with more threads
    (transport/gloo_factory.h says why)."""
    options = dist.ProcessGroupGloo._Options()
    options._timeout = timeout
    options._threads = load().GLOO_THREADS
    interfaces = [name for name in os.environ.get("GLOO_SOCKET_IFNAME", "").split(",") if name]
    if interfaces:
        options._devices = [dist.ProcessGroupGloo.create_device(interface=name) for name in interfaces]
    else:
        options._devices = [dist.ProcessGroupGloo.create_default_device()]
    return options


def _nccl_transport(store, rank, size, timeout, pg_options):
    """The group's NCCL backend for CUDA tensors, or None: when cuda_transport is gloo,
    or this process has no GPU or no NCCL (CUDA tensors then raise, naming the fix)."""
    if pg_options.resolved()["cuda_transport"] != "nccl":
        return None
    if not (torch.cuda.is_available() and dist.is_nccl_available()):
        return None
    options = dist.ProcessGroupNCCL.Options()
    options._timeout = timeout
    return dist.ProcessGroupNCCL(dist.PrefixStore("nccl/", store), rank, size, options)


def register_backend() -> None:
    """Makes backend="qccl" (and "cpu:qccl,...") usable; calling it again is harmless."""
    if BACKEND_NAME in dist.Backend.backend_list:
        return
    from ._coalescing_guard import install

    install()
    dist.Backend.register_backend(
        BACKEND_NAME, _create_backend, extended_api=True, devices=["cpu", "cuda"]
    )
