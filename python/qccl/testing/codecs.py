"""Reference implementations of qccl's wire codecs in plain PyTorch.

They write the same bytes as the C++ codecs (csrc/qccl/codec/codec.h documents the
format) and serve as the tests' oracle. Slow and simple on purpose.
"""

import math

import torch

TINY_BLOCK = 1e-30  # blocks below this magnitude decode to zeros
LEVELS = {"int8": 127, "int4": 7}


def _pad4(payload: torch.Tensor) -> torch.Tensor:
    pad = (-payload.numel()) % 4
    return torch.cat([payload, torch.zeros(pad, dtype=torch.uint8)])


def _blocks(x: torch.Tensor, block: int):
    n = x.numel()
    count = math.ceil(n / block)
    padded = torch.zeros(count * block, dtype=torch.float32)
    padded[:n] = x
    return padded.view(count, block), count


def _scales(blocks: torch.Tensor, name: str):
    """(scale, inverse) per block, as the C++ encoder computes them."""
    magnitudes = blocks.abs()
    non_finite = ~(magnitudes <= torch.finfo(torch.float32).max)
    absmax = torch.where(non_finite, torch.zeros_like(magnitudes), magnitudes).amax(dim=1)
    bad = non_finite.any(dim=1)
    tiny = absmax < TINY_BLOCK
    safe = torch.where(tiny | bad, torch.ones_like(absmax), absmax)
    if name == "fp16":
        exponent = torch.frexp(safe).exponent - 1  # ilogb
        scale = torch.ldexp(torch.ones_like(safe), exponent - 14)
        inverse = torch.ldexp(torch.ones_like(safe), 14 - exponent)
    else:
        scale = safe / LEVELS[name]
        inverse = LEVELS[name] / safe
    zero = torch.zeros_like(scale)
    scale = torch.where(tiny, zero, scale)
    scale = torch.where(bad, torch.full_like(scale, float("nan")), scale)
    inverse = torch.where(tiny | bad, zero, inverse)
    return scale, inverse


def encoded_bytes(name: str, block: int, n: int) -> int:
    if name == "bf16":
        return (2 * n + 3) // 4 * 4
    payload = {"fp16": 2 * n, "int8": n, "int4": (n + 1) // 2}[name]
    return (4 * math.ceil(n / block) + payload + 3) // 4 * 4


def encode(name: str, block: int, x: torch.Tensor) -> torch.Tensor:
    """Nearest rounding (the codecs' deterministic mode)."""
    x = x.reshape(-1).to(torch.float32)
    n = x.numel()
    if name == "bf16":
        return _pad4(x.to(torch.bfloat16).view(torch.uint8))
    blocks, count = _blocks(x, block)
    scale, inverse = _scales(blocks, name)
    # Blocks with NaN/Inf or below TINY_BLOCK carry a zero payload: their scale decides.
    values = torch.where(inverse[:, None] == 0, 0.0, blocks * inverse[:, None]).reshape(-1)[:n]
    if name == "fp16":
        payload = values.to(torch.float16).view(torch.uint8)
    else:
        levels = LEVELS[name]
        codes = torch.round(values).clamp(-levels, levels).to(torch.int8)
        if name == "int8":
            payload = codes.view(torch.uint8)
        else:
            if n % 2:
                codes = torch.cat([codes, torch.zeros(1, dtype=torch.int8)])
            pairs = codes.view(-1, 2).to(torch.int16) & 0x0F
            payload = (pairs[:, 0] | (pairs[:, 1] << 4)).to(torch.uint8)
    return _pad4(torch.cat([scale.view(torch.uint8), payload]))


def decode(name: str, block: int, data: torch.Tensor, n: int) -> torch.Tensor:
    if name == "bf16":
        return data[: 2 * n].view(torch.bfloat16).to(torch.float32)
    count = math.ceil(n / block)
    scale = data[: 4 * count].view(torch.float32)
    payload = data[4 * count :]
    if name == "fp16":
        values = payload[: 2 * n].view(torch.float16).to(torch.float32)
    elif name == "int8":
        values = payload[:n].view(torch.int8).to(torch.float32)
    else:
        low = (payload.to(torch.int16) << 12).to(torch.int16) >> 12
        high = payload.view(torch.int8).to(torch.int16) >> 4
        values = torch.stack([low, high], dim=1).reshape(-1)[:n].to(torch.float32)
    per_element = scale.repeat_interleave(block)[:n]
    return values * per_element
