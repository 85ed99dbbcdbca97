"""Compressed reduce-scatter and all-gather (FSDP2, ZeRO): every codec, dtype, op and awkward
size at 2 and 4 ranks against a float64 reference; all-gathers bit-identical across ranks;
NaN/Inf and zeros; routing and stats; error feedback keyed by the place in the step;
checkpoints."""

import pytest
import torch
import torch.distributed as dist

import qccl
from test_compression import CODECS, DTYPE_BOUND, FLOAT_DTYPES, assert_identical_on_all_ranks, gaussian, group_for, \
    relative_error

# Relative L2 error against float64 of one quantization stage of Gaussian data (block 256),
# with margin over what 2 and 4 ranks measure (docs/guide/sharded.md). Reduce-scatter: each contribution
# but the owner's is quantized once; all-gather: every shard is quantized once.
SHARDED_BOUND = {"fp16": 4e-4, "bf16": 3e-3, "int8": 1e-2, "int4": 0.17}
PREMUL_FACTOR = 0.37


def reduce_op(name):
    if name == "PREMUL_SUM":
        return dist._make_nccl_premul_sum(PREMUL_FACTOR)
    return getattr(dist.ReduceOp, name)


def reduced_reference(inputs, op, size):
    if op == "PREMUL_SUM":  # each contribution scaled in its own dtype, as NCCL (and Gloo in qccl) do
        return sum((x * PREMUL_FACTOR).double() for x in inputs)
    total = sum(x.double() for x in inputs)
    return total / size if op == "AVG" else total


def compressed_so_far(group, op):
    return qccl.stats(group)[op]["compressed_tensors"]


def rank_reduce_scatter_every_codec(ctx):
    """Compressed calls within the bound of float64's result; those routed exact (too small
    to gain, or a 16-bit codec on 16-bit data) equal the exact path's (Gloo's, which has no
    PREMUL_SUM: test_reductions checks qccl's exact path against it)."""
    exact = group_for(codec="none")
    worst = {}
    for codec in CODECS:
        group = group_for(codec=codec, min_bytes=0)
        for dtype in FLOAT_DTYPES:
            for n in [0, 1, 7, 255, 257, 3 * 256 + 5, 20_011]:
                for op in ["SUM", "AVG", "PREMUL_SUM"]:
                    inputs = [gaussian(r, n * ctx.size, dtype, seed=1) for r in range(ctx.size)]
                    given = inputs[ctx.rank].clone()
                    output = torch.full((n,), 7.0, dtype=dtype)
                    before = compressed_so_far(group, "reduce_scatter")
                    dist.reduce_scatter_tensor(output, given, op=reduce_op(op), group=group)
                    what = f"{codec} {dtype} n={n} {op}"
                    assert torch.equal(given, inputs[ctx.rank]), f"{what}: the input changed"
                    if compressed_so_far(group, "reduce_scatter") == before:
                        expected = torch.empty_like(output)
                        dist.reduce_scatter_tensor(expected, given, op=reduce_op(op), group=exact)
                        assert torch.equal(output, expected), f"{what}: exact, but not Gloo's result"
                        continue
                    reference = reduced_reference(inputs, op, ctx.size)[ctx.rank * n:(ctx.rank + 1) * n]
                    error = relative_error(output, reference)
                    assert error <= SHARDED_BOUND[codec] + DTYPE_BOUND[dtype], f"{what}: error {error:.2e}"
                    worst[codec] = max(worst.get(codec, 0.0), error)
    return worst


def test_reduce_scatter_every_codec_within_bounds(world):
    worst = world.run(rank_reduce_scatter_every_codec)
    print("reduce_scatter worst relative error per codec:", worst)


def rank_reduce_scatter_forms(ctx):
    """The list and coalesced forms take the same compressed path as reduce_scatter_tensor."""
    group = group_for(codec="int8", min_bytes=0)
    n = 5000
    inputs = [gaussian(r, n * ctx.size, seed=2) for r in range(ctx.size)]
    reference = reduced_reference(inputs, "AVG", ctx.size)[ctx.rank * n:(ctx.rank + 1) * n]
    qccl.reset_stats(group)

    listed = torch.empty(n)
    dist.reduce_scatter(listed, list(inputs[ctx.rank].clone().view(ctx.size, n).unbind()), op=dist.ReduceOp.AVG,
                        group=group)
    coalesced = [torch.empty(n), torch.empty(n)]
    with dist._coalescing_manager(group=group):
        for out in coalesced:
            dist.reduce_scatter_tensor(out, inputs[ctx.rank].clone(), op=dist.ReduceOp.AVG, group=group)
    for what, output in [("list", listed), ("coalesced 0", coalesced[0]), ("coalesced 1", coalesced[1])]:
        error = relative_error(output, reference)
        assert 0 < error <= SHARDED_BOUND["int8"], f"{what}: error {error:.2e} (0: not compressed)"
    stats = qccl.stats(group)["reduce_scatter"]
    assert stats["calls"] >= 2 and stats["compressed_tensors"] == 3, stats


def test_reduce_scatter_list_and_coalesced_forms(world):
    world.run(rank_reduce_scatter_forms)


def rank_all_gather_every_codec(ctx):
    worst = {}
    for codec in CODECS:
        group = group_for(allgather_codec=codec, min_bytes=0)
        for dtype in FLOAT_DTYPES:
            for n in [0, 1, 7, 255, 257, 3 * 256 + 5, 20_011]:
                shards = [gaussian(r, n, dtype, seed=3) for r in range(ctx.size)]
                reference = torch.cat(shards).double()
                gathered = torch.empty(n * ctx.size, dtype=dtype)
                dist.all_gather_into_tensor(gathered, shards[ctx.rank].clone(), group=group)
                listed = [torch.empty(n, dtype=dtype) for _ in range(ctx.size)]
                dist.all_gather(listed, shards[ctx.rank].clone(), group=group)
                what = f"{codec} {dtype} n={n}"
                assert torch.equal(torch.cat(listed), gathered), f"{what}: all_gather differs from the tensor form"
                assert_identical_on_all_ranks(ctx, gathered, what)
                error = relative_error(gathered, reference)
                assert error <= SHARDED_BOUND[codec] + DTYPE_BOUND[dtype], f"{what}: error {error:.2e}"
                worst[codec] = max(worst.get(codec, 0.0), error)
    return worst


def test_all_gather_every_codec_bit_identical_and_within_bounds(world):
    worst = world.run(rank_all_gather_every_codec)
    print("all_gather worst relative error per codec:", worst)


def rank_non_finite_and_zeros(ctx, codec):
    group = group_for(codec=codec, allgather_codec=codec, min_bytes=0)
    n = 4 * 256 + 9  # per rank
    full = gaussian(ctx.rank, n * ctx.size, seed=4)
    full.view(ctx.size, n)[:, 256:512] = 0.0  # a zero block in every shard, on every rank
    if ctx.rank == 0:
        full.view(ctx.size, n)[:, 5] = float("nan")  # every rank's shard gets a NaN from rank 0
    if ctx.rank == ctx.size - 1:
        full.view(ctx.size, n)[:, 600] = float("inf")
    output = torch.empty(n)
    dist.reduce_scatter_tensor(output, full, group=group)
    assert torch.isnan(output[5]) and not torch.isfinite(output[600]), f"{codec}: {output[5]}, {output[600]}"
    assert torch.equal(output[256:512], torch.zeros(256)), f"{codec}: zero block not exact after reduce_scatter"

    shard = gaussian(ctx.rank, n, seed=5)
    shard[256:512] = 0.0
    if ctx.rank == 0:
        shard[7] = -float("inf")
    gathered = torch.empty(n * ctx.size)
    dist.all_gather_into_tensor(gathered, shard, group=group)
    assert_identical_on_all_ranks(ctx, gathered, codec)
    assert not torch.isfinite(gathered[7]), f"{codec}: -inf became {gathered[7]}"
    for r in range(ctx.size):
        assert torch.equal(gathered[r * n + 256:r * n + 512], torch.zeros(256)), f"{codec}: rank {r}'s zeros"


@pytest.mark.parametrize("codec", CODECS)
def test_nan_inf_propagate_and_zeros_stay_exact(world, codec):
    world.run(rank_non_finite_and_zeros, codec)


def rank_routing_and_stats(ctx):
    group = group_for("sharded stats", codec="int8")  # default min_bytes 64 KiB, allgather_codec none
    qccl.reset_stats(group)
    n = 1 << 16
    big = gaussian(ctx.rank, n * ctx.size)
    cases = [
        (big, "AVG", None),
        (big[: 100 * ctx.size], "SUM", "below_min_bytes"),
        ((big * 100).to(torch.int32), "SUM", "dtype"),
        (big, "MAX", "reduce_op"),
    ]
    for full, op, reason in cases:
        output = torch.empty(full.numel() // ctx.size, dtype=full.dtype)
        reference = torch.empty_like(output)
        dist.reduce_scatter_tensor(reference, full.clone(), op=reduce_op(op), group=ctx.gloo)
        dist.reduce_scatter_tensor(output, full.clone(), op=reduce_op(op), group=group)
        if reason is None:
            assert not torch.equal(output, reference), "the large float32 AVG must be compressed"
        else:
            assert torch.equal(output, reference), f"{reason}: an exact reduce_scatter must equal Gloo's"
    with qccl.exact(group):
        output = torch.empty(n)
        dist.reduce_scatter_tensor(output, big.clone(), group=group)
    gathered = torch.empty(n * ctx.size)
    dist.all_gather_into_tensor(gathered, big[:n].clone(), group=group)
    expected = torch.empty_like(gathered)
    dist.all_gather_into_tensor(expected, big[:n].clone(), group=ctx.gloo)
    assert torch.equal(gathered, expected), "allgather_codec defaults to none: weights gather exactly"

    stats = qccl.stats(group)
    scatter, gather = stats["reduce_scatter"], stats["all_gather"]
    assert scatter["calls"] == 5 and scatter["compressed_tensors"] == 1, scatter
    assert scatter["exact_tensors"] == {
        "codec_none": 0, "forced_exact": 1, "dtype": 1, "reduce_op": 1, "below_min_bytes": 1,
        "no_byte_saving": 0,
    }
    assert gather["calls"] == 1 and gather["exact_tensors"]["codec_none"] == 1, gather
    assert stats["calls"] == 0, "reduce-scatters are not counted as all-reduces"

    qccl.reset_stats(group)
    output = torch.empty(n)
    dist.reduce_scatter_tensor(output, big.clone(), group=group)
    scatter = qccl.stats(group)["reduce_scatter"]
    assert scatter["logical_bytes"] == 4 * n * ctx.size
    assert scatter["exact_wire_bytes"] == 4 * n * (ctx.size - 1)
    # int8 with block 256: 260 bytes for 1024 → ~3.94x fewer bytes on the wire.
    assert 3.8 < scatter["compression_ratio"] < 4.0, scatter

    weights = group_for("sharded weights", allgather_codec="bf16")
    qccl.reset_stats(weights)
    dist.all_gather_into_tensor(gathered, big[:n].clone(), group=weights)
    assert abs(qccl.stats(weights)["all_gather"]["compression_ratio"] - 2.0) < 0.01, "float32 as bf16"
    dist.all_gather_into_tensor(torch.empty(n * ctx.size, dtype=torch.uint8),
                                torch.zeros(n, dtype=torch.uint8), group=weights)  # FSDP's mixed-dtype buffer
    gather = qccl.stats(weights)["all_gather"]
    assert gather["compressed_tensors"] == 1 and gather["exact_tensors"]["dtype"] == 1, gather


def test_routing_exact_reasons_and_stats(world):
    world.run(rank_routing_and_stats)


def rank_error_feedback(ctx, steps, mark_steps):
    """FSDP2 reduce-scatters a new buffer every call. Two calls per step on the same sizes:
    with error feedback each place in the step keeps its own residual, so each call's
    accumulated error stays bounded; without, it grows with the steps."""
    accumulated = {}
    n = 20_000
    inputs = [[gaussian(r, n * ctx.size, seed=s) for r in range(ctx.size)] for s in (6, 7)]
    references = [reduced_reference(x, "SUM", ctx.size)[ctx.rank * n:(ctx.rank + 1) * n] for x in inputs]
    for feedback in [False, True]:
        group = group_for("sharded ef", codec="int4", error_feedback=feedback, min_bytes=0)
        totals = [torch.zeros(n, dtype=torch.float64) for _ in inputs]
        for _ in range(steps):
            for place, x in enumerate(inputs):
                output = torch.empty(n)
                dist.reduce_scatter_tensor(output, x[ctx.rank].clone(), group=group)  # a fresh buffer
                totals[place] += output.double() - references[place]
            if mark_steps:
                qccl.mark_step()
        accumulated[feedback] = max(t.norm().item() / r.norm().item() for t, r in zip(totals, references))
    return accumulated


def test_error_feedback_follows_the_place_in_the_step(world2):
    long = world2.run(rank_error_feedback, 30, True)[0]
    assert long[True] < 2 * SHARDED_BOUND["int4"], long  # bounded: about one call's error
    assert long[True] < 0.1 * long[False], long  # without feedback it adds up
    # Without step marks the places grow: every call starts from a zero residual.
    unmarked = world2.run(rank_error_feedback, 30, False)[0]
    assert unmarked[True] > 0.5 * unmarked[False], unmarked


def rank_optimizer_steps_mark_steps(ctx):
    """qccl marks a step after every torch.optim optimizer step, so a plain training loop
    gets per-place error feedback without calling anything."""
    group = group_for("sharded ef optim", codec="int4", error_feedback=True, min_bytes=0)
    n = 20_000
    full = gaussian(ctx.rank, n * ctx.size, seed=8)
    reference = torch.empty(n)
    dist.reduce_scatter_tensor(reference, full.clone(), group=ctx.gloo)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    total = torch.zeros(n, dtype=torch.float64)
    for _ in range(30):
        output = torch.empty(n)
        dist.reduce_scatter_tensor(output, full.clone(), group=group)
        total += output.double() - reference.double()
        parameter.grad = torch.ones(1)
        optimizer.step()
    return total.norm().item() / reference.double().norm().item()


def test_optimizer_steps_mark_training_steps(world2):
    assert all(error < 2 * SHARDED_BOUND["int4"] for error in world2.run(rank_optimizer_steps_mark_steps))


def rank_checkpoint(ctx):
    options = dict(codec="int4", error_feedback=True, stochastic=True, allgather_codec="int8", min_bytes=0)
    n = 3000
    inputs = [gaussian(ctx.rank, n * ctx.size, seed=s) for s in range(6)]
    original = group_for("sharded run", **options)
    outputs = []
    for step, x in enumerate(inputs):
        if step == 3:
            saved = qccl.state_dict(original)
        output = torch.empty(n)
        dist.reduce_scatter_tensor(output, x.clone(), group=original)
        gathered = torch.empty(n * ctx.size)
        dist.all_gather_into_tensor(gathered, output, group=original)
        outputs.append(gathered)
        qccl.mark_step()

    resumed = group_for("sharded resumed", **options)  # a fresh group, as after a restart
    qccl.load_state_dict(resumed, saved)
    for step in range(3, 6):
        output = torch.empty(n)
        dist.reduce_scatter_tensor(output, inputs[step].clone(), group=resumed)
        gathered = torch.empty(n * ctx.size)
        dist.all_gather_into_tensor(gathered, output, group=resumed)
        assert torch.equal(gathered, outputs[step]), f"step {step} differs after the restore"
        qccl.mark_step()
    assert saved["reduce_scatter_places"] == [0] and saved["sharded_calls"] == 6, saved


def test_checkpoint_round_trip_reproduces_the_run(world2):
    world2.run(rank_checkpoint)
