"""Inputs every rank can recompute for any rank, and float64/int64 reference results."""

import torch
import torch.distributed as dist

# The dtypes every collective is checked with.
DTYPES = [
    torch.float32,
    torch.float64,
    torch.bfloat16,
    torch.float16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
    torch.int8,
    torch.int16,
]
# Dtypes whose bits Gloo itself handles, so qccl's result can be compared bit for bit.
GLOO_DTYPES = [d for d in DTYPES if d not in (torch.int16, torch.bool)]

PREMUL_FACTOR = 0.5


def make_input(rank, dtype, numel=37, seed=0):
    """Rank `rank`'s input; any rank can rebuild any other rank's input."""
    g = torch.Generator().manual_seed(7919 * seed + rank)
    if dtype is torch.bool:
        return torch.randint(0, 2, (numel,), generator=g).bool()
    if dtype.is_floating_point:
        return torch.randn(numel, generator=g, dtype=torch.float64).to(dtype)
    low = 0 if dtype is torch.uint8 else -9
    return torch.randint(low, 10, (numel,), generator=g).to(dtype)


def valid_ops(dtype):
    if dtype is torch.bool:
        return ["SUM", "PRODUCT", "MIN", "MAX", "BAND", "BOR", "BXOR"]
    if dtype.is_floating_point:
        return ["SUM", "AVG", "PREMUL_SUM", "PRODUCT", "MIN", "MAX"]
    return ["SUM", "AVG", "PRODUCT", "MIN", "MAX", "BAND", "BOR", "BXOR"]


def reduce_op(name):
    if name == "PREMUL_SUM":
        return dist._make_nccl_premul_sum(PREMUL_FACTOR)
    return getattr(dist.ReduceOp, name)


def reference_reduce(inputs, name):
    """The reduction of `inputs` computed in 64-bit arithmetic, cast to their dtype.

    Integer casts wrap around exactly like fixed-width arithmetic, so SUM/PRODUCT of
    small integers match even when they overflow."""
    dtype = inputs[0].dtype
    exact = not dtype.is_floating_point
    wide = torch.stack([t.to(torch.int64 if exact else torch.float64) for t in inputs])
    if dtype is torch.bool:
        name = {"SUM": "MAX", "PRODUCT": "MIN", "BAND": "MIN", "BOR": "MAX"}.get(name, name)
    if name == "SUM":
        out = wide.sum(0)
    elif name == "AVG":
        out = wide.sum(0).div(len(inputs), rounding_mode="trunc") if exact else wide.mean(0)
    elif name == "PREMUL_SUM":
        out = (wide * PREMUL_FACTOR).sum(0)
    elif name == "PRODUCT":
        out = wide.prod(0)
    elif name == "MIN":
        out = wide.amin(0)
    elif name == "MAX":
        out = wide.amax(0)
    else:
        fn = {"BAND": torch.bitwise_and, "BOR": torch.bitwise_or, "BXOR": torch.bitwise_xor}[name]
        out = wide[0]
        for t in wide[1:]:
            out = fn(out, t)
    return out.to(dtype)


def tolerance(dtype):
    return {
        torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
        torch.float16: dict(rtol=1e-2, atol=1e-2),
        torch.float32: dict(rtol=1e-5, atol=1e-5),
        torch.float64: dict(rtol=1e-12, atol=1e-12),
    }.get(dtype, dict(rtol=0, atol=0))


def assert_matches(actual, expected, what):
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    torch.testing.assert_close(actual, expected, **tolerance(expected.dtype), msg=lambda m: f"{what}: {m}")
