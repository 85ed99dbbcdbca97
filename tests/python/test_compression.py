"""The compressed allreduce: every codec, dtype and awkward size at 2 and 4 ranks, checked
bit for bit across ranks and against a float64 reference; NaN/Inf, zeros, routing,
fusion, error feedback, checkpoints, settings."""

import contextlib
import dataclasses

import pytest
import torch
import torch.distributed as dist

import qccl
from world import run_in_fresh_world

CODECS = ["fp16", "bf16", "int8", "int4"]
FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# Relative L2 error of a compressed allreduce of Gaussian data against float64 (two
# quantization stages, block 256), with margin over what 2 and 4 ranks measure (docs/guide/compression.md).
CODEC_BOUND = {"fp16": 6e-4, "bf16": 4e-3, "int8": 1.5e-2, "int4": 0.25}
# Plus rounding the float32 result to the tensor's own dtype.
DTYPE_BOUND = {torch.float32: 0.0, torch.float16: 6e-4, torch.bfloat16: 4e-3}

_groups = {}


def group_for(tag="", **options):
    """A qccl group with `options`, created once per test on every rank, in the same order
    (the test world destroys the groups a test made once it returns: world.py)."""
    for stale in [k for k, group in _groups.items() if group not in dist.distributed_c10d._world.pg_map]:
        del _groups[stale]  # destroyed: let go of its threads
    key = (tag, tuple(sorted(options.items())))
    if key not in _groups:
        _groups[key] = dist.new_group(backend="qccl", pg_options=qccl.Options(**options))
    return _groups[key]


def gaussian(rank, numel, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(104729 * seed + 31 * numel + rank)
    return torch.randn(numel, generator=g, dtype=torch.float64).to(dtype)


def assert_identical_on_all_ranks(ctx, tensor, what):
    mine = tensor.contiguous().view(-1).view(torch.uint8)
    copies = [torch.empty_like(mine) for _ in range(ctx.size)]
    dist.all_gather(copies, mine, group=ctx.gloo)
    for r, c in enumerate(copies):
        assert torch.equal(c, copies[0]), f"{what}: rank {r} differs from rank 0"


def relative_error(result, reference):
    norm = reference.norm().item()
    return (result.double() - reference).norm().item() / norm if norm else 0.0


def rank_every_codec(ctx):
    worst = {}
    sizes = [0, 1, 7, 255, 257, ctx.size * 256 + 3, 40_003]
    for codec in CODECS:
        group = group_for(codec=codec, min_bytes=0)
        for dtype in FLOAT_DTYPES:
            for n in sizes:
                for op in ["SUM", "AVG"]:
                    inputs = [gaussian(r, n, dtype) for r in range(ctx.size)]
                    tensor = inputs[ctx.rank].clone()
                    dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op), group=group)
                    what = f"{codec} {dtype} n={n} {op}"
                    assert tensor.dtype == dtype and tensor.shape == (n,), what
                    assert_identical_on_all_ranks(ctx, tensor, what)
                    reference = sum(x.double() for x in inputs)
                    if op == "AVG":
                        reference = reference / ctx.size
                    error = relative_error(tensor, reference)
                    assert error <= CODEC_BOUND[codec] + DTYPE_BOUND[dtype], f"{what}: error {error:.2e}"
                    worst[codec] = max(worst.get(codec, 0.0), error)
    return worst


def test_every_codec_is_bit_identical_and_within_bounds(world):
    world.run(rank_every_codec)


def rank_many_chunks(ctx):
    """More chunks (2^20 elements each) than the pipeline keeps in flight (6 all-to-alls
    and 6 allgathers), with a short last one: every chunk must land in its own place."""
    n = 13 * (1 << 20) + 1000
    group = group_for(codec="int8", min_bytes=0)
    inputs = [gaussian(r, n) for r in range(ctx.size)]
    tensor = inputs[ctx.rank].clone()
    dist.all_reduce(tensor, group=group)
    assert_identical_on_all_ranks(ctx, tensor, "13 chunks")
    reference = sum(x.double() for x in inputs)
    for start in range(0, n, 1 << 20):  # chunk by chunk: a misplaced chunk cannot hide
        part = slice(start, start + (1 << 20))
        error = relative_error(tensor[part], reference[part])
        assert error <= CODEC_BOUND["int8"], f"chunk at {start}: error {error:.2e}"


def test_a_tensor_of_many_chunks_lands_chunk_for_chunk(world2):
    world2.run(rank_many_chunks)


def rank_non_finite_and_zeros(ctx, codec):
    group = group_for(codec=codec, min_bytes=0)
    n = 4 * 256 + 9
    tensor = gaussian(ctx.rank, n)
    tensor[256:512] = 0.0  # a zero block on every rank
    if ctx.rank == 0:
        tensor[5] = float("nan")
    if ctx.rank == ctx.size - 1:
        tensor[600] = float("inf")
        tensor[n - 1] = -float("inf")
    dist.all_reduce(tensor, group=group)
    assert_identical_on_all_ranks(ctx, tensor, codec)
    for i in [5, 600, n - 1]:
        assert not torch.isfinite(tensor[i]), f"{codec}: element {i} became finite: {tensor[i]}"
    assert torch.equal(tensor[256:512], torch.zeros(256)), f"{codec}: zero block not exact"
    # GradScaler's check: every rank sees the overflow.
    found_inf = torch.tensor([float(not torch.isfinite(tensor).all())])
    dist.all_reduce(found_inf, group=ctx.gloo)
    assert found_inf.item() == ctx.size


@pytest.mark.parametrize("codec", CODECS)
def test_nan_inf_propagate_and_zero_blocks_stay_exact(world, codec):
    world.run(rank_non_finite_and_zeros, codec)


def rank_fp16_does_not_overflow(ctx):
    group = group_for(codec="fp16", min_bytes=0)
    big = torch.full((1000,), 60000.0) * (1 + ctx.rank)  # sums far above float16's 65504
    tensor = big.clone()
    dist.all_reduce(tensor, group=group)
    expected = 60000.0 * sum(1 + r for r in range(ctx.size))
    assert torch.isfinite(tensor).all()
    assert relative_error(tensor, torch.full((1000,), expected, dtype=torch.float64)) < 1e-3


def test_fp16_sums_beyond_float16_range_stay_finite(world2):
    world2.run(rank_fp16_does_not_overflow)


def rank_stochastic_is_reproducible(ctx):
    outputs = []
    for tag in ["first", "second"]:  # two groups, same settings, same calls
        group = group_for(tag, codec="int4", stochastic=True, min_bytes=0)
        results = []
        for step in range(3):
            tensor = gaussian(ctx.rank, 5000, seed=step)
            dist.all_reduce(tensor, group=group)
            results.append(tensor)
        outputs.append(results)
    for a, b in zip(*outputs):
        assert torch.equal(a, b), "stochastic rounding is not reproducible"
    assert not torch.equal(outputs[0][0], group_nearest_result(ctx)), "no stochastic rounding happened"


def group_nearest_result(ctx):
    tensor = gaussian(ctx.rank, 5000, seed=0)
    dist.all_reduce(tensor, group=group_for(codec="int4", min_bytes=0))
    return tensor


def test_stochastic_rounding_is_reproducible(world2):
    world2.run(rank_stochastic_is_reproducible)


def rank_routing_and_stats(ctx):
    group = group_for("stats", codec="int8")  # default min_bytes: 64 KiB
    qccl.reset_stats(group)
    big = gaussian(ctx.rank, 1 << 20)
    small = gaussian(ctx.rank, 100)
    ints = torch.arange(50_000, dtype=torch.int32) * (ctx.rank + 1)
    cases = [
        (big.clone(), "SUM", None),
        (small.clone(), "SUM", "below_min_bytes"),
        (ints.clone(), "SUM", "dtype"),
        (big.clone(), "MAX", "reduce_op"),
    ]
    for tensor, op, reason in cases:
        reference = tensor.clone()
        dist.all_reduce(reference, op=getattr(dist.ReduceOp, op), group=ctx.gloo)
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op), group=group)
        if reason is None:
            assert not torch.equal(tensor, reference), "the large float32 SUM must be compressed"
        else:
            assert torch.equal(tensor, reference), f"{reason}: an exact allreduce must equal Gloo's"
    with qccl.exact(group):
        tensor = big.clone()
        dist.all_reduce(tensor, group=group)
    reference = big.clone()
    dist.all_reduce(reference, group=ctx.gloo)
    assert torch.equal(tensor, reference), "qccl.exact() must reduce exactly"

    stats = qccl.stats(group)
    assert stats["calls"] == 5 and stats["compressed_tensors"] == 1
    assert stats["exact_tensors"] == {
        "codec_none": 0, "forced_exact": 1, "dtype": 1, "reduce_op": 1, "below_min_bytes": 1,
        "no_byte_saving": 0,
    }
    assert stats["settings"]["codec"] == "int8"
    assert stats["encode_seconds"] > 0 and stats["decode_seconds"] > 0

    qccl.reset_stats(group)
    tensor = big.clone()
    dist.all_reduce(tensor, group=group)
    stats = qccl.stats(group)
    assert stats["logical_bytes"] == 4 << 20
    # int8 with block 256: 260 bytes for 1024 → ~3.94x fewer bytes on the wire.
    assert 3.8 < stats["compression_ratio"] < 4.0, stats


def test_routing_exact_reasons_and_stats(world):
    world.run(rank_routing_and_stats)


def rank_tiny_tensors(ctx):
    """With min_bytes=0 a tensor whose encoding would not send fewer bytes than the exact
    ring (a logged scalar, a few elements) goes exact; larger ones are still compressed."""
    for codec in CODECS:
        group = group_for(codec=codec, min_bytes=0)
        for n in [1, 2, 3, 7, 16, 33, 64, 100]:
            tensor = gaussian(ctx.rank, n)
            reference = tensor.clone()
            dist.all_reduce(reference, group=ctx.gloo)
            qccl.reset_stats(group)
            dist.all_reduce(tensor, group=group)
            stats = qccl.stats(group)
            what = f"{codec} n={n}"
            if stats["compressed_tensors"] == 1:
                assert stats["wire_bytes"] < stats["exact_wire_bytes"], f"{what}: {stats}"
            else:
                assert stats["wire_bytes"] == stats["exact_wire_bytes"], f"{what}: {stats}"
                assert stats["exact_tensors"]["no_byte_saving"] == 1, f"{what}: {stats['exact_tensors']}"
                assert torch.equal(tensor, reference), f"{what}: an exact allreduce must equal Gloo's"
        qccl.reset_stats(group)
        dist.all_reduce(gaussian(ctx.rank, 4096), group=group)
        stats = qccl.stats(group)
        assert stats["compressed_tensors"] == 1, f"{codec}: 16 KiB must still be compressed"
        assert stats["wire_bytes"] < stats["exact_wire_bytes"], f"{codec}: {stats}"
    # A 16-bit codec cannot shrink a 16-bit tensor.
    for codec, dtype in [("bf16", torch.bfloat16), ("fp16", torch.float16)]:
        group = group_for(codec=codec, min_bytes=0)
        qccl.reset_stats(group)
        dist.all_reduce(gaussian(ctx.rank, 4096, dtype), group=group)
        assert qccl.stats(group)["exact_tensors"]["no_byte_saving"] == 1, f"{codec} on {dtype}"


def test_tiny_tensors_go_exact_when_compression_would_grow_them(world):
    world.run(rank_tiny_tensors)


def rank_alone(ctx):
    group = group_for(codec="int8", min_bytes=0)
    dist.all_reduce(gaussian(0, 1), group=group)
    dist.all_reduce(gaussian(0, 4096), group=group)
    return qccl.stats(group)["compressed_tensors"]


def test_one_rank_compresses_as_configured():
    """With one rank nothing goes on the wire either way: tensors compress as configured,
    so the rank quantizes like a larger group (the CUDA tests rely on it on one GPU)."""
    assert run_in_fresh_world(1, rank_alone) == [2]


def integer_valued(rank, numel, seed):
    g = torch.Generator().manual_seed(7 * seed + rank)
    return torch.randint(-50, 50, (numel,), generator=g).float()


def rank_fusion(ctx):
    # Exact path: integer-valued floats sum exactly, so fused and one-by-one must agree
    # bit for bit whatever the summation order.
    inputs = [integer_valued(ctx.rank, 1024, i) for i in range(1000)]
    fused = [t.clone() for t in inputs]
    dist.all_reduce_coalesced(fused)
    for i, t in enumerate(inputs):
        single = t.clone()
        dist.all_reduce(single)
        assert torch.equal(fused[i], single), f"tensor {i}: fused differs from one by one"

    # Compressed path, buckets of 64 KiB (so 1000 tensors of 4 KiB make ~63 buckets).
    group = group_for("fusion", codec="int8", min_bytes=0, bucket_bytes=64 << 10)
    floats = [gaussian(r, 1024, seed=i) for r in range(ctx.size) for i in range(1000)]
    mine = [floats[ctx.rank * 1000 + i].clone() for i in range(1000)]
    dist.all_reduce_coalesced(mine, group=group)
    for i in range(1000):
        reference = sum(floats[r * 1000 + i].double() for r in range(ctx.size))
        assert relative_error(mine[i], reference) < CODEC_BOUND["int8"], f"tensor {i}"
    assert_identical_on_all_ranks(ctx, torch.cat(mine), "fused int8")

    # The _coalescing_manager route, whose list may mix compressed and exact members.
    tensors = [gaussian(ctx.rank, 3000, seed=i) for i in range(20)]
    ints = torch.arange(5) * ctx.rank
    with dist._coalescing_manager(group=group):
        for t in tensors[:10] + [ints] + tensors[10:]:
            dist.all_reduce(t, group=group)
    assert torch.equal(ints, torch.arange(5) * sum(range(ctx.size)))
    assert_identical_on_all_ranks(ctx, torch.cat(tensors), "coalescing manager")
    for i, t in enumerate(tensors):
        reference = sum(gaussian(r, 3000, seed=i).double() for r in range(ctx.size))
        assert relative_error(t, reference) < CODEC_BOUND["int8"]


def test_fusion_of_many_small_tensors(world):
    world.run(rank_fusion)


def rank_async_burst(ctx):
    group = group_for(codec="int8", min_bytes=0)
    tensors = [gaussian(ctx.rank, 10_000 + i, seed=i) for i in range(30)]
    works = [dist.all_reduce(t, group=group, async_op=True) for t in tensors]
    for w in works:
        w.wait()
    for i, t in enumerate(tensors):
        reference = sum(gaussian(r, 10_000 + i, seed=i).double() for r in range(ctx.size))
        assert relative_error(t, reference) < CODEC_BOUND["int8"]
    assert_identical_on_all_ranks(ctx, torch.cat(tensors), "async burst")


def test_burst_of_async_calls(world):
    world.run(rank_async_burst)


def rank_error_feedback(ctx, steps):
    """Reducing the same tensor repeatedly: with error feedback the accumulated error is
    the current residual, so it stays bounded; without, it grows with the steps."""
    accumulated = {}
    for feedback in [False, True]:
        group = group_for("ef", codec="int4", error_feedback=feedback, min_bytes=0)
        inputs = [gaussian(r, 20_000, seed=9) for r in range(ctx.size)]
        reference = sum(x.double() for x in inputs)
        tensor = torch.empty(20_000)
        total = torch.zeros(20_000, dtype=torch.float64)
        for _ in range(steps):
            tensor.copy_(inputs[ctx.rank])  # same buffer every step, like a DDP bucket
            dist.all_reduce(tensor, group=group)
            total += tensor.double() - reference
        accumulated[feedback] = total.norm().item() / reference.norm().item()
    return accumulated


def test_error_feedback_keeps_accumulated_error_bounded(world2):
    short, long = world2.run(rank_error_feedback, 10)[0], world2.run(rank_error_feedback, 40)[0]
    assert long[True] < 2 * CODEC_BOUND["int4"], long  # bounded: about one step's error
    assert long[True] < 0.1 * long[False], (short, long)  # without feedback it adds up
    assert long[False] > 3 * short[False]


def rank_checkpoint(ctx):
    options = dict(codec="int4", error_feedback=True, stochastic=True, min_bytes=0)
    inputs = [gaussian(ctx.rank, 3000, seed=s) for s in range(6)]
    original = group_for("run", **options)
    tensor = torch.empty(3000)
    outputs = []
    for step, x in enumerate(inputs):
        if step == 3:
            saved = qccl.state_dict(original)
        tensor.copy_(x)
        dist.all_reduce(tensor, group=original)
        outputs.append(tensor.clone())

    resumed = group_for("resumed", **options)  # a fresh group, as after a restart
    qccl.load_state_dict(resumed, saved)
    other = torch.empty(3000)  # a different buffer too
    for step in range(3, 6):
        other.copy_(inputs[step])
        dist.all_reduce(other, group=resumed)
        assert torch.equal(other, outputs[step]), f"step {step} differs after the restore"
    assert len(saved["residuals"]) == 1 and saved["calls"] == 3

    with pytest.raises(ValueError, match="settings"):
        qccl.load_state_dict(group_for(codec="int8", min_bytes=0), saved)


def test_checkpoint_round_trip_reproduces_the_run(world2):
    world2.run(rank_checkpoint)


def rank_mismatched_settings(ctx):
    group = dist.new_group(backend="qccl", pg_options=qccl.Options(codec=["int8", "none"][ctx.rank % 2]))
    with pytest.raises(ValueError, match="different qccl settings"):
        dist.all_reduce(torch.ones(10), group=group)
    group = group_for(codec="int8", min_bytes=0)
    exact = qccl.exact(group) if ctx.rank == 0 else contextlib.nullcontext()
    with exact, pytest.raises(ValueError, match="qccl.exact"):
        dist.all_reduce(torch.ones(10), group=group)
    tensor = torch.ones(10)
    dist.all_reduce(tensor, group=group)  # the group still works
    assert torch.equal(tensor, torch.full((10,), float(ctx.size)))


def test_ranks_with_different_settings_get_a_clear_error(world2):
    world2.run(rank_mismatched_settings)


def rank_bad_pg_options(ctx):
    with pytest.raises(TypeError, match="qccl.Options"):
        dist.new_group(backend="qccl", pg_options={"codec": "int8"})


def test_pg_options_of_another_type_are_refused(world2):
    world2.run(rank_bad_pg_options)


def test_options_validate_at_construction():
    with pytest.raises(ValueError, match="none, fp16, bf16, int8, int4"):
        qccl.Options(codec="int3")
    with pytest.raises(ValueError, match="multiple of 8"):
        qccl.Options(block=100)
    with pytest.raises(ValueError, match="bucket_bytes"):
        qccl.Options(bucket_bytes=0)
    with pytest.raises(TypeError, match="block"):
        qccl.Options(block="256")
    with pytest.raises(TypeError, match="error_feedback"):
        qccl.Options(error_feedback=1)
    assert qccl.Options(codec="int4", block=64).resolved()["block"] == "64"


def test_options_has_one_field_per_setting():
    """Options lists the settings by hand (a typed dataclass); the C++ table is their source."""
    assert {f.name for f in dataclasses.fields(qccl.Options)} == set(qccl.Options().resolved())


def test_environment_supplies_defaults(monkeypatch):
    monkeypatch.setenv("QCCL_CODEC", "bf16")
    monkeypatch.setenv("QCCL_MIN_BYTES", "0")
    resolved = qccl.Options(min_bytes=5).resolved()
    assert resolved["codec"] == "bf16" and resolved["min_bytes"] == "5"
    monkeypatch.setenv("QCCL_CODEC", "int9")
    with pytest.raises(ValueError, match="QCCL_CODEC=int9"):
        qccl.Options()


def test_force_network_is_a_setting(monkeypatch):
    """benchmarks/netlab sets QCCL_FORCE_NETWORK=1: a group records it like any setting."""
    assert qccl.Options().resolved()["force_network"] == "0"
    monkeypatch.setenv("QCCL_FORCE_NETWORK", "1")
    assert qccl.Options().resolved()["force_network"] == "1"
    assert qccl.Options(force_network=False).resolved()["force_network"] == "0"
    monkeypatch.setenv("QCCL_FORCE_NETWORK", "yes please")
    with pytest.raises(ValueError, match="QCCL_FORCE_NETWORK"):
        qccl.Options()
