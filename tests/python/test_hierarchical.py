"""Hierarchical compression: 4 ranks as 2 nodes x 2 (ranks_per_node=2). All-reduces stay
bit-identical across all four ranks and within the codec's bound of float64; reduce-scatters
within theirs; node stages through shared memory give the bits they give over sockets; the
node layout comes from the setting and each group's members (else from the hosts, never
from LOCAL_WORLD_SIZE); ranks that disagree on it, or a layout that is not uniform, get a
clear error at group creation."""

import os

import pytest
import torch
import torch.distributed as dist

import qccl
from test_compression import CODEC_BOUND, DTYPE_BOUND, assert_identical_on_all_ranks, gaussian, group_for, \
    relative_error
from test_sharded import SHARDED_BOUND, reduced_reference


@pytest.fixture
def world4(world):
    if world.size != 4:
        pytest.skip("2 nodes x 2 ranks")
    return world


def rank_allreduce(ctx):
    flat = group_for(codec="int8", min_bytes=0)
    worst = {}
    for codec in ["bf16", "int8", "int4"]:
        nodes = group_for("nodes", codec=codec, ranks_per_node=2, min_bytes=0)
        assert qccl.stats(nodes)["settings"]["ranks_per_node"] == "2"
        for dtype in [torch.float32, torch.bfloat16]:
            for n in [1, 7, 257, 3001, 40_003]:
                for op in ["SUM", "AVG"]:
                    inputs = [gaussian(r, n, dtype, seed=11) for r in range(ctx.size)]
                    tensor = inputs[ctx.rank].clone()
                    dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op), group=nodes)
                    what = f"{codec} {dtype} n={n} {op}"
                    assert_identical_on_all_ranks(ctx, tensor, what)
                    reference = reduced_reference(inputs, op, ctx.size)
                    error = relative_error(tensor, reference)
                    assert error <= CODEC_BOUND[codec] + DTYPE_BOUND[dtype], f"{what}: error {error:.2e}"
                    worst[codec] = max(worst.get(codec, 0.0), error)
    # Exact inside the nodes: not what the flat group computes.
    inputs = [gaussian(r, 40_003, seed=12) for r in range(ctx.size)]
    across, everywhere = inputs[ctx.rank].clone(), inputs[ctx.rank].clone()
    nodes = group_for("nodes", codec="int8", ranks_per_node=2, min_bytes=0)
    qccl.reset_stats(nodes)
    dist.all_reduce(across, group=nodes)
    dist.all_reduce(everywhere, group=flat)
    assert not torch.equal(across, everywhere), "the hierarchical all-reduce computed the flat one"
    # In the node: an exact reduce-scatter and all-gather of float32 pieces.
    assert qccl.stats(nodes)["node_wire_bytes"] == 2 * 4 * ((40_003 + 1) // 2)
    return worst


def test_allreduce_across_nodes_is_bit_identical_and_within_bounds(world4):
    print("hierarchical all_reduce worst error per codec:", world4.run(rank_allreduce)[0])


def rank_reduce_scatter(ctx):
    worst = {}
    for codec in ["bf16", "int8", "int4"]:
        nodes = group_for("nodes", codec=codec, ranks_per_node=2, min_bytes=0, error_feedback=True)
        for n in [5, 300, 20_011]:
            for op in ["SUM", "AVG", "PREMUL_SUM"]:
                inputs = [gaussian(r, n * ctx.size, seed=13) for r in range(ctx.size)]
                output = torch.empty(n)
                reduce_op = dist._make_nccl_premul_sum(0.37) if op == "PREMUL_SUM" else getattr(dist.ReduceOp, op)
                dist.reduce_scatter_tensor(output, inputs[ctx.rank].clone(), op=reduce_op, group=nodes)
                reference = reduced_reference(inputs, op, ctx.size)[ctx.rank * n:(ctx.rank + 1) * n]
                error = relative_error(output, reference)
                assert error <= SHARDED_BOUND[codec], f"{codec} n={n} {op}: error {error:.2e}"
                worst[codec] = max(worst.get(codec, 0.0), error)
    return worst


def test_reduce_scatter_across_nodes_within_bounds(world4):
    print("hierarchical reduce_scatter worst error per codec:", world4.run(rank_reduce_scatter)[0])


def rank_placement(ctx):
    """The same calls on two fresh hierarchical groups: node stages through shared memory
    (these ranks share a host) and over sockets (force_network)."""
    results = []
    for force_network in (False, True):
        group = group_for(f"placement {force_network}", codec="int8", ranks_per_node=2, min_bytes=0,
                          error_feedback=True, force_network=force_network)
        mine = []
        for n in (7, 3001, 300_003):  # 300k floats: several rounds of the 1 MiB channel
            x = gaussian(ctx.rank, n * ctx.size, seed=17)
            dist.all_reduce(x, group=group)
            shard = torch.empty(n)
            dist.reduce_scatter_tensor(shard, gaussian(ctx.rank, n * ctx.size, seed=19), group=group)
            mine += [x, shard]
        results.append(mine)
    return [torch.equal(a, b) for a, b in zip(*results)]


def test_node_stages_give_the_same_bits_through_shared_memory_as_over_sockets(world4):
    assert world4.run(rank_placement) == [[True] * 6] * 4


def rank_layout_from_the_setting_and_the_members(ctx):
    layouts = []
    for environment in ({"QCCL_RANKS_PER_NODE": "2"}, {"LOCAL_WORLD_SIZE": "2"}):
        os.environ.update(environment)  # read when a group is created
        try:
            every = dist.new_group(backend="qccl")
            crossing = dist.new_group([0, 2], backend="qccl")  # one member per node
            within = dist.new_group([2, 3], backend="qccl")    # one node
        finally:
            for name in environment:
                del os.environ[name]
        layout = [qccl.stats(every)["settings"]["ranks_per_node"]]
        for group, members in ((crossing, [0, 2]), (within, [2, 3])):
            if ctx.rank in members:
                layout.append(qccl.stats(group)["settings"]["ranks_per_node"])
        layouts.append(layout)
    return layouts


def test_node_layout_comes_from_the_setting_and_the_members_never_from_local_world_size(world4):
    """QCCL_RANKS_PER_NODE counts global ranks; each group gets its own count. Without it
    the hosts decide: these 4 ranks share one, so no group is hierarchical, whatever
    torchrun's LOCAL_WORLD_SIZE says (test_bench.py's netlab test sees two hosts)."""
    layouts = world4.run(rank_layout_from_the_setting_and_the_members)
    by_setting = [layout for layout, _ in layouts]
    by_hosts = [layout for _, layout in layouts]
    assert by_setting == [["2", "1"], ["2"], ["2", "1", "2"], ["2", "2"]], by_setting
    assert by_hosts == [["1", "1"], ["1"], ["1", "1", "1"], ["1", "1"]], by_hosts


def rank_bad_layouts(ctx):
    messages = []
    uneven = qccl.Options(codec="int8", ranks_per_node=3)
    with pytest.raises(ValueError) as caught:
        dist.new_group(backend="qccl", pg_options=uneven)
    messages.append(str(caught.value))
    mine = qccl.Options(codec="int8", ranks_per_node=2 if ctx.rank < 2 else 4)
    with pytest.raises(ValueError) as caught:
        dist.new_group(backend="qccl", pg_options=mine)
    messages.append(str(caught.value))
    tensor = torch.ones(3)
    dist.all_reduce(tensor)  # the default group stays usable
    assert tensor.tolist() == [4.0] * 3
    return messages


def test_uneven_or_mismatched_layouts_raise_at_group_creation(world4):
    for uneven, mismatched in world4.run(rank_bad_layouts):
        assert uneven.startswith("qccl: ranks_per_node=3 puts the group's global ranks [0, 1, 2, 3] on nodes unevenly")
        assert mismatched.startswith("qccl: the ranks of a group disagree on ranks_per_node (rank r's at position r: "
                                     "[2, 2, 4, 4])"), mismatched
