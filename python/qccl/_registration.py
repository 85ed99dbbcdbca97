"""Registers "qccl" with torch.distributed and creates one backend per process group."""

import torch.distributed as dist

from .factory import create_backend, create_reconfigurable_backend

BACKEND_NAME = "qccl"


def _create_backend(backend_opts, pg_options):
    """The creator torch calls (extended API) for every group that uses qccl; with
    init_process_group(..., enable_reconfigure=True) a group whose members come from
    dist._reconfigure."""
    if getattr(backend_opts, "enable_reconfigure", False):
        return create_reconfigurable_backend(
            backend_opts.store,
            backend_opts.group_rank,
            backend_opts.group_size,
            timeout=backend_opts.timeout,
            options=pg_options,
        )
    return create_backend(
        backend_opts.store,
        backend_opts.group_rank,
        backend_opts.group_size,
        timeout=backend_opts.timeout,
        options=pg_options,
        global_ranks=backend_opts.global_ranks_in_group,
    )


def register_backend() -> None:
    """Makes backend="qccl" (and "cpu:qccl,...") usable; calling it again is harmless."""
    if BACKEND_NAME in dist.Backend.backend_list:
        return
    from ._coalescing_guard import install
    from ._exit import close_groups_at_exit

    install()
    close_groups_at_exit()
    dist.Backend.register_backend(
        BACKEND_NAME, _create_backend, extended_api=True, devices=["cpu", "cuda"]
    )
