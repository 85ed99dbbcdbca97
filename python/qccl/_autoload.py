"""The torch.backends entry point: PyTorch calls autoload() at the end of `import torch`.

An exception escaping from here would break `import torch` for the user, so every error
is turned into a warning. Only Python is imported: the extension loads when a group is
created.
"""

import sys
import warnings


def autoload() -> None:
    registration = sys.modules.get(f"{__package__}._registration")
    if registration is not None and not hasattr(registration, "register_backend"):
        # `import qccl` came first and is importing torch right now: qccl/__init__
        # registers the backend once torch is in, so there is nothing to do here.
        return
    try:
        from ._registration import register_backend

        register_backend()
    except Exception as error:  # noqa: BLE001 - must never break `import torch`
        warnings.warn(f"qccl: could not register the qccl backend: {error}", stacklevel=2)
