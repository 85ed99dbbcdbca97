"""The torch.backends entry point: PyTorch calls autoload() at the end of `import torch`.

An exception escaping from here would break `import torch` for the user, so every error
is turned into a warning. Only Python is imported: the extension loads when a group is
created.
"""

import warnings


def autoload() -> None:
    try:
        from ._registration import register_backend

        register_backend()
    except Exception as error:  # noqa: BLE001 - must never break `import torch`
        warnings.warn(f"qccl: could not register the qccl backend: {error}", stacklevel=2)
