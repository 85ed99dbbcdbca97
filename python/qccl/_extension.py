"""Loads the compiled extension qccl._C, refusing a torch it was not built for.

The c10d Backend class gains virtual methods between torch minor versions, so an
extension built against one minor version calls the wrong methods on another.
"""

import torch

_module = None


def _minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def load():
    global _module
    if _module is None:
        import torch.distributed  # registers c10d's Python types, which _C derives from

        from . import _C

        if _minor(_C.torch_version) != _minor(torch.__version__):
            raise ImportError(
                f"qccl: this build was compiled against torch {_C.torch_version} but torch "
                f"{torch.__version__} is installed; rebuild it with "
                "`pip install --no-build-isolation --force-reinstall --no-deps .`"
            )
        _module = _C
    return _module
