"""qccl: a torch.distributed process-group backend.

Importing qccl registers the backend name "qccl" with torch.distributed (the package's
torch.backends entry point does the same at `import torch`, so the import is optional):

    import torch.distributed as dist
    dist.init_process_group("qccl")            # CPU tensors go through qccl
    dist.init_process_group("cpu:qccl,cuda:nccl")
"""

from ._registration import BACKEND_NAME, register_backend
from ._version import __version__

register_backend()


def has_cuda() -> bool:
    """Whether this qccl build contains its CUDA code (the CUDA flavour)."""
    from ._extension import load

    return load().has_cuda()


__all__ = ["BACKEND_NAME", "__version__", "has_cuda", "register_backend"]
