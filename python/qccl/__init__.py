"""qccl: a torch.distributed process-group backend.

Importing qccl registers the backend name "qccl" with torch.distributed (the package's
torch.backends entry point does the same at `import torch`, so the import is optional):

    import torch.distributed as dist
    dist.init_process_group("qccl")            # CPU tensors go through qccl
    dist.init_process_group("cpu:qccl,cuda:nccl")

Compression is configured with QCCL_* variables or qccl.Options (pg_options), and
observed with qccl.stats(); see the README. Code that builds its process groups itself
(torchft) gets one from qccl.create_backend or qccl.create_process_group.
"""

import os as _os

from ._registration import BACKEND_NAME, register_backend
from ._version import __version__
from .checkpoint import CompressionStateful, load_state_dict, state_dict
from .compression import exact, mark_step, reset_stats, stats
from .factory import create_backend, create_process_group
from .options import Options
from .stragglers import StragglerReport, straggler_report

register_backend()

# For C++ programs: put this directory on CMAKE_PREFIX_PATH and find_package(qccl) finds
# the libqccl this package loads (like torch.utils.cmake_prefix_path for Torch).
cmake_prefix_path = _os.path.dirname(_os.path.abspath(__file__))


def has_cuda() -> bool:
    """Whether this qccl build contains its CUDA code (the CUDA flavour)."""
    from ._extension import load

    return load().has_cuda()


__all__ = [
    "BACKEND_NAME",
    "CompressionStateful",
    "Options",
    "__version__",
    "cmake_prefix_path",
    "create_backend",
    "create_process_group",
    "exact",
    "has_cuda",
    "load_state_dict",
    "mark_step",
    "register_backend",
    "reset_stats",
    "state_dict",
    "stats",
    "straggler_report",
    "StragglerReport",
]
