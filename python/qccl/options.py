"""qccl.Options: a group's settings, passed as pg_options to init_process_group/new_group.

Every field left as None takes its value from the environment (QCCL_<FIELD>, e.g.
QCCL_CODEC), or qccl's default when that is unset; a field that is set wins over the
environment. So one job can run an exact group beside a compressed one:

    exact = dist.new_group(pg_options=qccl.Options(codec="none"))
    int8 = dist.new_group(pg_options=qccl.Options(codec="int8", error_feedback=True))
"""

import typing
from dataclasses import dataclass, fields

from ._extension import load


@dataclass(frozen=True)
class Options:
    codec: str | None = None  # "none" | "fp16" | "bf16" | "int8" | "int4"
    block: int | None = None  # elements per quantization block (multiple of 8)
    min_bytes: int | None = None  # smaller tensors are reduced exactly
    error_feedback: bool | None = None  # carry what the encoder dropped into the next call
    stochastic: bool | None = None  # stochastic rounding in the encoder
    bucket_bytes: int | None = None  # fusion cap for lists of tensors
    error_feedback_max_bytes: int | None = None  # residual memory cap per group
    verify: bool | None = None  # check every collective's arguments across ranks
    force_network: bool | None = None  # never bypass the network (benchmarks/netlab)
    p2p_codec: str | None = None  # send/recv payloads: "none" | "fp16" | "bf16" | "int8"
    cuda_transport: str | None = None  # CUDA tensors: "nccl" | "gloo" (staged through host)
    allgather_codec: str | None = None  # all-gather (FSDP's weights): "none" (default) | a codec
    ranks_per_node: int | None = None  # consecutive global ranks per node (default 0: the hosts decide)

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            expected = typing.get_args(field.type)[0]  # X in "X | None"
            wrong_bool = expected is int and isinstance(value, bool)
            if value is not None and (not isinstance(value, expected) or wrong_bool):
                raise TypeError(
                    f"qccl: Options({field.name}={value!r}) must be a {expected.__name__} or None"
                )
        self.resolved()  # raises ValueError for invalid values, naming the valid ones

    def settings(self) -> dict[str, str]:
        """The fields that are set, as the text the C++ side parses."""
        out = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool):
                out[field.name] = "1" if value else "0"
            elif value is not None:
                out[field.name] = str(value)
        return out

    def resolved(self) -> dict[str, str]:
        """Every setting a group created with these options now would use."""
        return load().resolve_settings(self.settings())
