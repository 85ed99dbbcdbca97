"""Closes qccl's groups when the interpreter exits, while Python is still whole.

A script that ends without destroy_process_group() leaves its groups alive into the
interpreter's finalization. A group's threads may then drop the last reference to a tensor
that Python created (a finished call's), which takes the GIL; a thread that asks for the
GIL while Python finalizes is ended by a forced unwind through C++ frames, and the process
dies with "terminate called without an active exception" (SIGABRT). Measured: 1 in about
15 runs of a 2-rank script on a busy 2-core VM, the worker thread releasing a finished
all_reduce; Gloo's own threads do the same (pytorch/pytorch#190489).

An atexit handler runs before finalization: it stops every live group's threads there, so
none is left to take the GIL later. It does not wait for peers, so it cannot hang; it
fails only calls that nobody waited for. It is registered when the backend is registered
(at `import torch`), before anything a script registers, so it runs after the script's
own atexit handlers, which may still use their groups.
"""

import atexit

from . import _extension

_registered = False


def _close_every_group():
    if _extension._module is not None:  # no group was ever created otherwise
        _extension._module.close_every_group_at_exit()


def close_groups_at_exit() -> None:
    global _registered
    if not _registered:
        atexit.register(_close_every_group)
        _registered = True
