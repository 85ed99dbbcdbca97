"""The C++ codecs write exactly the bytes of their pure-PyTorch reference
(qccl.testing.codecs), and decode exactly as it does, for odd sizes, blocks, NaN/Inf,
tiny and zero blocks."""

import pytest
import torch

from qccl._extension import load
from qccl.testing import codecs as reference

pytestmark = pytest.mark.unit

CODECS = ["fp16", "bf16", "int8", "int4"]


def inputs(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g) * torch.logspace(-3, 3, n)  # magnitudes vary by block
    if n > 600:
        x[5] = float("nan")
        x[300] = float("inf")
        x[520:580] = 1e-35  # a block below the tiny threshold (with its neighbours' zeros)
    return x


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("block", [8, 256, 1000])
@pytest.mark.parametrize("n", [1, 2, 7, 255, 1001, 40_000])
def test_cpp_codec_matches_reference(codec, block, n):
    C = load()
    x = inputs(n)
    wire = C.codec_encode(codec, block, x)
    assert wire.numel() == reference.encoded_bytes(codec, block, n) == C.codec_encoded_bytes(codec, block, n)
    finite = torch.isfinite(x).all()
    if codec != "bf16" or finite:  # bf16 may spell NaN with other payload bits
        assert torch.equal(wire, reference.encode(codec, block, x))
    decoded = C.codec_decode(codec, block, wire, n)
    expected = reference.decode(codec, block, wire, n)
    assert torch.equal(decoded.isnan(), expected.isnan())
    assert torch.equal(decoded.nan_to_num(), expected.nan_to_num())
    accumulated = C.codec_decode(codec, block, wire, n, add_to=torch.ones(n))
    assert torch.equal(accumulated.nan_to_num(), (expected + 1).nan_to_num())


def test_decode_checks_the_byte_count():
    C = load()
    with pytest.raises(ValueError, match="int8 encodes 10 elements in"):
        C.codec_decode("int8", 256, torch.zeros(3, dtype=torch.uint8), 10)


@pytest.mark.parametrize("codec", CODECS)
def test_decode_adds_into_a_strided_tensor(codec):
    C = load()
    n = 300
    x = inputs(n).clamp(-100, 100)
    wire = C.codec_encode(codec, 8, x)
    base = torch.full((2 * n,), -7.0)
    target = base[::2]  # every other element: not contiguous
    target.fill_(1.0)
    result = C.codec_decode(codec, 8, wire, n, add_to=target)
    assert result is target or result.data_ptr() == target.data_ptr()
    assert torch.equal(target, reference.decode(codec, 8, wire, n) + 1)
    assert (base[1::2] == -7.0).all()


@pytest.mark.parametrize("n", [-1, -(2**40), 2**62])
def test_element_counts_out_of_range_are_refused(n):
    with pytest.raises(ValueError, match="qccl: a codec cannot take"):
        load().codec_encoded_bytes("int8", 256, n)
