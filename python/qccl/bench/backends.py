"""The backends a benchmark run compares: gloo, nccl and qccl with a codec.

Each is a process group over all ranks plus the device its tensors live on. qccl groups
are created with qccl.Options(codec=...), so one run holds every codec side by side.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

DEFAULT_BACKENDS = "gloo,qccl:none,qccl:fp16,qccl:bf16,qccl:int8,qccl:int4,nccl"


@dataclass
class Backend:
    name: str  # as the user wrote it, e.g. "qccl:int8"
    codec: str  # "none" except for compressing qccl groups
    device: torch.device
    group: object = None
    flat: bool = False  # qccl: ranks_per_node=1, no hierarchy whatever the node layout

    @property
    def is_qccl(self) -> bool:
        return self.name.startswith("qccl")

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def parse_backends(spec: str) -> list[Backend]:
    """'gloo,qccl:int8,nccl' -> Backends without groups; raises ValueError on a bad name."""
    backends = []
    for name in (part.strip() for part in spec.split(",") if part.strip()):
        base, _, codec = name.partition(":")
        codec, _, layout = codec.partition(":")
        if base == "qccl" and layout in ("", "flat"):
            from qccl.options import Options

            Options(codec=codec or "none")  # raises ValueError naming the valid codecs
            suffix = ":flat" if layout else ""
            backends.append(Backend(f"qccl:{codec or 'none'}{suffix}", codec or "none", torch.device("cpu"),
                                    flat=bool(layout)))
        elif base in ("gloo", "nccl") and not codec:
            backends.append(Backend(base, "none", torch.device("cpu")))
        else:
            raise ValueError(f"qccl.bench: unknown backend {name!r} (gloo, nccl, qccl:CODEC, qccl:CODEC:flat)")
    return backends


def nccl_unavailable_reason() -> str | None:
    """Why NCCL cannot run here (one GPU per local rank is needed), or None."""
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    if not torch.cuda.is_available():
        return "no CUDA device"
    if torch.cuda.device_count() < local_ranks:
        return f"{torch.cuda.device_count()} GPU(s) for {local_ranks} local ranks (NCCL needs one each)"
    return None


def create_groups(backends: list[Backend], log) -> list[Backend]:
    """Creates one group per backend (collectively: every rank passes the same list).

    Returns the backends that can run here; NCCL without a GPU per rank is left out with
    a message, as every rank reaches the same verdict."""
    import qccl

    usable = []
    for backend in backends:
        if backend.name == "nccl":
            reason = nccl_unavailable_reason()
            if reason:
                log(f"qccl.bench: skipping nccl: {reason}")
                continue
            backend.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(backend.device)
            backend.group = dist.new_group(backend="nccl")
        elif backend.is_qccl:
            # The codec applies to every collective qccl compresses: all-gather too (which
            # takes it only on request, allgather_codec) and send/recv where qccl has it
            # (not int4).
            p2p_codec = backend.codec if backend.codec in ("none", "fp16", "bf16", "int8") else "none"
            options = qccl.Options(codec=backend.codec, p2p_codec=p2p_codec, allgather_codec=backend.codec,
                                   ranks_per_node=1 if backend.flat else None)
            backend.group = dist.new_group(backend="qccl", pg_options=options)
        else:
            backend.group = dist.new_group(backend="gloo")
        usable.append(backend)
    return usable
