"""Checkpoints of the compression state (error-feedback residuals, the stochastic-rounding
call counter): a rank refuses a state that belongs to another rank or group, and a
torch.distributed.checkpoint (DCP) gives every rank its own state back."""

import pathlib
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

import qccl


def gaussian(rank, numel, seed):
    g = torch.Generator().manual_seed(7919 * seed + rank)
    return torch.randn(numel, generator=g)


def fresh_group(**settings):
    return dist.new_group(backend="qccl", pg_options=qccl.Options(**settings))


def all_states(ctx, group):
    states = [None] * ctx.size
    dist.all_gather_object(states, qccl.state_dict(group), group=ctx.gloo)
    return states


def rank_foreign_state(ctx):
    settings = dict(codec="int8", error_feedback=True, min_bytes=0)
    group = fresh_group(**settings)
    tensor = gaussian(ctx.rank, 1000, 0)
    dist.all_reduce(tensor, group=group)
    states = all_states(ctx, group)
    mine, other = states[ctx.rank], states[(ctx.rank + 1) % ctx.size]
    assert (mine["rank"], mine["world_size"]) == (ctx.rank, ctx.size)

    with pytest.raises(ValueError, match=rf"^qccl: load_state_dict on rank {ctx.rank}: .*rank {(ctx.rank + 1) % ctx.size}"):
        qccl.load_state_dict(group, other)
    # One group of one rank per rank (created in the same order everywhere).
    solo = [fresh_group_of([r], **settings) for r in range(ctx.size)][ctx.rank]
    with pytest.raises(ValueError, match=r"^qccl: load_state_dict on rank 0: .*world size"):
        qccl.load_state_dict(solo, mine)
    if ctx.size >= 4:
        # Rank 0 of group [0, 1] and rank 0 of group [2, 3]: same rank, same size.
        halves = [fresh_group_of([0, 1], **settings), fresh_group_of([2, 3], **settings)]
        half = halves[ctx.rank // 2]
        tensor = gaussian(ctx.rank, 1000, 1)
        dist.all_reduce(tensor, group=half)
        states = all_states(ctx, half)
        partner = states[(ctx.rank + 2) % 4]
        with pytest.raises(ValueError, match=r"^qccl: load_state_dict on rank \d: .*ranks"):
            qccl.load_state_dict(half, partner)
    qccl.load_state_dict(group, mine)  # its own state still loads, and the group still works
    dist.all_reduce(tensor, group=group)


def fresh_group_of(ranks, **settings):
    group = dist.new_group(ranks, backend="qccl", pg_options=qccl.Options(**settings))
    return group if group is not dist.GroupMember.NON_GROUP_MEMBER else None


def test_state_of_another_rank_or_group_is_refused(world):
    world.run(rank_foreign_state)


def rank_state_versions(ctx):
    """A state saved before states recorded their owner (version 1) still loads."""
    settings = dict(codec="int4", error_feedback=True, stochastic=True, min_bytes=0)
    original = fresh_group(**settings)
    inputs = [gaussian(ctx.rank, 2000, seed) for seed in range(4)]
    buffer = torch.empty(2000)
    outputs = []
    for step, x in enumerate(inputs):
        if step == 2:
            state = qccl.state_dict(original)
        buffer.copy_(x)
        dist.all_reduce(buffer, group=original)
        outputs.append(buffer.clone())
    old_format = {"version": 1, "settings": state["settings"], "calls": state["calls"], "residuals": state["residuals"]}
    resumed = fresh_group(**settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qccl.load_state_dict(resumed, old_format)
    assert any("version 1" in str(w.message) for w in caught), [str(w.message) for w in caught]
    for step in range(2, 4):
        buffer.copy_(inputs[step])
        dist.all_reduce(buffer, group=resumed)
        assert torch.equal(buffer, outputs[step])
    with pytest.raises(ValueError, match=r"^qccl: load_state_dict on rank \d: .*version 99"):
        qccl.load_state_dict(resumed, {**state, "version": 99})


def test_version_1_states_still_load(world2):
    world2.run(rank_state_versions)


def rank_dcp_keeps_every_rank(ctx, directory):
    """DCP keeps one copy of entries saved under the same key on several ranks; the
    Stateful saves each rank's state under a key of its own, so every rank gets its own
    back."""
    settings = dict(codec="int4", error_feedback=True, min_bytes=0)
    group = fresh_group(**settings)
    tensor = gaussian(ctx.rank, 5000, 0)
    dist.all_reduce(tensor, group=group)
    saved = qccl.state_dict(group)
    dcp.save({"qccl": qccl.CompressionStateful(group)}, checkpoint_id=directory)

    restored = fresh_group(**settings)
    dcp.load({"qccl": qccl.CompressionStateful(restored)}, checkpoint_id=directory)
    state = qccl.state_dict(restored)
    assert state["rank"] == ctx.rank and state["calls"] == saved["calls"]
    assert len(state["residuals"]) == len(saved["residuals"]) == 1
    assert torch.equal(state["residuals"][0], saved["residuals"][0]), "another rank's residual came back"
    others = all_states(ctx, group)
    assert not torch.equal(others[0]["residuals"][0], others[1]["residuals"][0]), "ranks' residuals should differ"


def test_dcp_checkpoint_keeps_each_ranks_state(world2, tmp_path):
    world2.run(rank_dcp_keeps_every_rank, str(pathlib.Path(tmp_path) / "dcp"))
