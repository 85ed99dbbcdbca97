"""The codec kernels against the CPU codecs: the same bytes for the same input, and the
same decoded values for the same bytes (the CPU codecs are checked against the pure
PyTorch reference in test_codec_reference.py, so all three agree)."""

import pytest
import torch

import qccl
from qccl._extension import load

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(
        not (torch.cuda.is_available() and qccl.has_cuda()),
        reason="needs a GPU and the CUDA flavour of qccl",
    ),
]

CODECS = ["fp16", "bf16", "int8", "int4"]


def test_a_kernel_of_this_build_runs_on_the_gpu():
    # Before the codec kernels: a failure here means the build's device code does not
    # run on this GPU at all (architecture, driver), not that a codec is wrong.
    assert load().cuda_self_test(), "a trivial kernel of this build did not run on the GPU"
SIZES = [1, 7, 255, 257, 4099, 1_000_003]
BLOCKS = [8, 256, 4096]


def _values(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * torch.logspace(-3, 3, n).roll(seed)
    return x


def _special_values(block):
    """Blocks that take the codecs' edge paths: NaN, Inf, all zero, tiny, huge, ties."""
    parts = [
        torch.tensor([1.0, float("nan")] + [0.5] * (block - 2)),
        torch.tensor([float("inf"), -2.0] + [0.25] * (block - 2)),
        torch.zeros(block),
        torch.full((block,), 1e-35),
        torch.full((block,), 3e38) * torch.linspace(-1, 1, block),
        torch.arange(block, dtype=torch.float32) - block / 2 + 0.5,
    ]
    return torch.cat(parts)


def _same_bits(a, b):
    return torch.equal(a.cpu().view(torch.int32), b.cpu().view(torch.int32))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("stochastic", [False, True])
def test_kernels_write_the_cpu_codec_bytes(codec, block, stochastic):
    C = load()
    for n in SIZES:
        x = _values(n, seed=n)
        cpu = C.codec_encode(codec, block, x, stochastic, 1234)
        gpu = C.codec_encode(codec, block, x.cuda(), stochastic, 1234)
        assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu), (codec, block, n)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("block", [8, 256])
def test_kernels_handle_special_blocks_like_the_cpu(codec, block):
    C = load()
    x = _special_values(block)
    cpu = C.codec_encode(codec, block, x)
    gpu = C.codec_encode(codec, block, x.cuda())
    assert torch.equal(gpu.cpu(), cpu)
    assert _same_bits(C.codec_decode(codec, block, gpu, x.numel()), C.codec_decode(codec, block, cpu, x.numel()))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("block", BLOCKS)
def test_kernels_decode_any_bytes_to_the_cpu_values(codec, block):
    C = load()
    g = torch.Generator().manual_seed(block)
    for n in SIZES:
        nbytes = C.codec_encoded_bytes(codec, block, n)
        wire = torch.randint(0, 256, (nbytes,), generator=g, dtype=torch.uint8)
        cpu = C.codec_decode(codec, block, wire, n)
        gpu = C.codec_decode(codec, block, wire.cuda(), n)
        assert _same_bits(gpu, cpu), (codec, block, n)
        acc = _values(n, seed=7)
        cpu_sum = C.codec_decode(codec, block, wire, n, acc.clone())
        gpu_sum = C.codec_decode(codec, block, wire.cuda(), n, acc.cuda())
        assert _same_bits(gpu_sum, cpu_sum), (codec, block, n)


def test_kernels_refuse_mixed_devices():
    C = load()
    with pytest.raises(ValueError, match="qccl: .*out"):
        C.codec_encode("int8", 256, torch.ones(512, device="cuda"), out=torch.empty(C.codec_encoded_bytes("int8", 256, 512), dtype=torch.uint8))
