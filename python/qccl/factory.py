"""qccl.create_backend and qccl.create_process_group: a qccl group built from a store, for
code that makes its process groups itself (torchft reconfigures one on every quorum
change) instead of through init_process_group/new_group."""

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from ._extension import load
from ._nodes import agree_on_ranks_per_node, with_group_layout
from .compression import watch_optimizer_steps


def create_backend(store, rank: int, world_size: int, timeout: timedelta = dist.default_pg_timeout, options=None,
                   global_ranks=None):
    """A qccl backend (a c10d Backend, like ProcessGroupGloo) over `store`.

    qccl's CPU transport is Gloo: a ProcessGroupGloo on the same store, rank and size,
    created here because torch wheels ship no Gloo headers to build one from C++. CUDA
    tensors go through a ProcessGroupNCCL made the same way (docs/cuda.md). Their keys go
    under a prefix of this creation's own, agreed by all ranks, so creating a group again
    on the same store (a restart, a new quorum) never meets the previous one's keys
    (docs/design.md, "Restarts"). `options` is a qccl.Options (None: the environment's).
    `global_ranks` (the group's members' global ranks, as torch's creator passes them)
    place the ranks on nodes for hierarchical compression (_nodes.py); without them only
    an explicit ranks_per_node does, counting this group's own ranks.
    """
    from .options import Options

    if options is None:
        options = Options()
    if not isinstance(options, Options):
        raise TypeError(f"qccl: options must be a qccl.Options, not {type(options).__name__}")
    if not isinstance(timeout, timedelta):
        raise TypeError(f"qccl: timeout must be a datetime.timedelta, not {type(timeout).__name__}")
    if not 0 <= rank < world_size:
        raise ValueError(f"qccl: rank {rank} is not in a group of {world_size}")
    options = with_group_layout(options, world_size, global_ranks)
    extension = load()
    watch_optimizer_steps()  # steps key the reduce-scatters' error feedback
    prefix = extension.fresh_store_prefix(store, rank, world_size, timeout)
    store = dist.PrefixStore(prefix, store)
    agree_on_ranks_per_node(store, rank, world_size, int(options.resolved()["ranks_per_node"]))
    gloo = dist.ProcessGroupGloo(dist.PrefixStore("gloo/", store), rank, world_size, _gloo_options(timeout))
    nccl = _nccl_transport(store, rank, world_size, timeout, options)
    return extension.ProcessGroupQCCL(gloo, rank, world_size, timeout, options.settings(), nccl, store)


def create_reconfigurable_backend(store, rank: int, world_size: int, timeout: timedelta = dist.default_pg_timeout,
                                  options=None):
    """A qccl backend whose members come from c10d's reconfigure (torch.distributed's
    _get_reconfigure_handle and _reconfigure), and change in place at every reconfigure:
    what init_process_group(..., enable_reconfigure=True) creates. It has no members
    (and makes no connection) until the first reconfigure. `options` as create_backend's;
    CUDA tensors are staged through host memory (no NCCL transport)."""
    from .options import Options

    if options is None:
        options = Options()
    if not isinstance(options, Options):
        raise TypeError(f"qccl: options must be a qccl.Options, not {type(options).__name__}")
    extension = load()
    watch_optimizer_steps()
    return extension.ReconfigurableGroup(store, rank, world_size, timeout, options.settings())


def create_process_group(store, rank: int, world_size: int, timeout: timedelta = dist.default_pg_timeout, options=None):
    """A torch ProcessGroup whose CPU (and CUDA) tensors go through one new qccl backend:
    what torchft's _create_pg returns, and what dist's collectives take as `group=`."""
    backend = create_backend(store, rank, world_size, timeout=timeout, options=options)
    group = dist.ProcessGroup(store, rank, world_size)
    group._set_default_backend(dist.ProcessGroup.BackendType.CUSTOM)
    for device in ("cpu", "cuda"):
        group._register_backend(torch.device(device), dist.ProcessGroup.BackendType.CUSTOM, backend)
    return group


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
