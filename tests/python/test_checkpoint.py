"""Checkpoints of the compression state (error-feedback residuals, the stochastic-rounding
call counter): a DDP run resumed in fresh processes, from per-rank torch.save files or
from a torch.distributed.checkpoint (DCP) directory, ends with the same bits as the
uninterrupted run; a freed bucket's residual is never handed to another buffer; a rank
refuses a state that belongs to another rank or group."""

import pathlib
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.nn.parallel import DistributedDataParallel as DDP

import qccl
from world import run_in_fresh_world

SETTINGS = dict(codec="int4", error_feedback=True, stochastic=True, min_bytes=0)
STEPS, SAVE_AT = 8, 4


def make_training():
    group = dist.new_group(backend="qccl", pg_options=qccl.Options(**SETTINGS))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    ddp = DDP(model, process_group=group, bucket_cap_mb=0.01)  # a few buckets of ~10 KB
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    return group, ddp, optimizer


def train_step(rank, ddp, optimizer, step):
    g = torch.Generator().manual_seed(1000 * step + rank)
    x, y = torch.randn(16, 32, generator=g), torch.randn(16, 8, generator=g)
    optimizer.zero_grad(set_to_none=True)
    nn.functional.mse_loss(ddp(x), y).backward()
    optimizer.step()


def parameters_of(ddp):
    return [p.detach().clone() for p in ddp.parameters()]


def rank_uninterrupted(ctx, directory):
    group, ddp, optimizer = make_training()
    for step in range(STEPS):
        if step == SAVE_AT:
            state = qccl.state_dict(group)
            torch.save({"model": ddp.state_dict(), "optimizer": optimizer.state_dict(), "qccl": state},
                       f"{directory}/rank{ctx.rank}.pt")
            model_state, optimizer_state = get_state_dict(ddp, optimizer)
            dcp.save({"model": model_state, "optimizer": optimizer_state, "qccl": qccl.CompressionStateful(group)},
                     checkpoint_id=f"{directory}/dcp")
            saved = (len(ddp.reducer._get_zeros_like_grad_buckets()), len(state["residuals"]), state["calls"])
        train_step(ctx.rank, ddp, optimizer, step)
    return parameters_of(ddp), saved


def rebuild_buckets_exactly(group, ddp):
    """The resume recipe of docs/guide/compression.md: DDP reduces a new model's first
    step as one bucket of all gradients, then rebuilds its buckets; one step inside
    qccl.exact(), before the states are loaded, makes the resumed run reduce the buckets
    the original run reduced."""
    with qccl.exact(group):
        ddp(torch.zeros(1, 32)).sum().backward()
    ddp.zero_grad(set_to_none=True)


def rank_resumed(ctx, directory, how):
    group, ddp, optimizer = make_training()
    rebuild_buckets_exactly(group, ddp)
    if how == "torch.save":
        checkpoint = torch.load(f"{directory}/rank{ctx.rank}.pt", weights_only=True)
        ddp.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        qccl.load_state_dict(group, checkpoint["qccl"])
    else:
        model_state, optimizer_state = get_state_dict(ddp, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state, "qccl": qccl.CompressionStateful(group)}
        dcp.load(state, checkpoint_id=f"{directory}/dcp")
        set_state_dict(ddp, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    for step in range(SAVE_AT, STEPS):
        train_step(ctx.rank, ddp, optimizer, step)
    return parameters_of(ddp)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ddp_checkpoint")
    return directory, run_in_fresh_world(2, rank_uninterrupted, str(directory))


@pytest.mark.parametrize("how", ["torch.save", "dcp"])
def test_ddp_resumed_in_new_processes_ends_bit_exact(uninterrupted, how):
    directory, results = uninterrupted
    resumed = run_in_fresh_world(2, rank_resumed, str(directory), how)
    for rank, ((expected, _), got) in enumerate(zip(results, resumed)):
        for i, (a, b) in enumerate(zip(expected, got)):
            assert torch.equal(a, b), f"rank {rank}, parameter {i}: the resumed run differs"


def test_ddp_checkpoint_holds_only_the_live_buckets(uninterrupted):
    """DDP's first step reduces one bucket of every gradient and frees it when it rebuilds
    its buckets: that bucket's residual is stale and must not be saved."""
    _, results = uninterrupted
    for _, (buckets, residuals, calls) in results:
        assert buckets > 1, "the test needs DDP to split the gradients into several buckets"
        assert residuals == buckets, f"{residuals} residuals saved for {buckets} live DDP buckets"
        assert calls == 1 + (SAVE_AT - 1) * buckets  # one bucket in the first step


def gaussian(rank, numel, seed):
    g = torch.Generator().manual_seed(7919 * seed + rank)
    return torch.randn(numel, generator=g)


def fresh_group(**settings):
    return dist.new_group(backend="qccl", pg_options=qccl.Options(**settings))


def rank_reallocated_buffer(ctx):
    """A bucket buffer replaced by a new one (as DDP does once): the old buffer's residual
    must neither survive into the checkpoint nor go to a buffer at the freed address."""
    settings = dict(codec="int4", error_feedback=True, min_bytes=0)
    n = 3000
    inputs = [gaussian(ctx.rank, n, seed) for seed in range(8)]
    original = fresh_group(**settings)
    outputs = []
    old = torch.empty(n)
    for step in range(3):
        old.copy_(inputs[step])
        dist.all_reduce(old, group=original)
    new = torch.empty(n)  # allocated while `old` lives: a different address
    del old
    for step in range(3, 8):
        if step == 5:
            saved = qccl.state_dict(original)
        new.copy_(inputs[step])
        dist.all_reduce(new, group=original)
        outputs.append(new.clone())

    resumed = fresh_group(**settings)
    qccl.load_state_dict(resumed, saved)
    buffer = torch.empty(n)
    for step in range(5, 8):
        buffer.copy_(inputs[step])
        dist.all_reduce(buffer, group=resumed)
        assert torch.equal(buffer, outputs[step - 3]), f"step {step} differs after the restore"

    # Same address, new storage (two tensors over one numpy array, one after the other):
    # the second is a new bucket and starts from a zero residual, like in a new group.
    memory = np.zeros(n, dtype=np.float32)
    group = fresh_group(**settings)
    first = torch.from_numpy(memory)
    for step in range(3):
        first.copy_(inputs[step])
        dist.all_reduce(first, group=group)
    del first
    second = torch.from_numpy(memory)
    second.copy_(inputs[3])
    dist.all_reduce(second, group=group)
    reference = inputs[3].clone()
    dist.all_reduce(reference, group=fresh_group(**settings))
    assert torch.equal(second, reference), "a new tensor at a freed address took the freed one's residual"


def test_reallocated_buffer_residual_is_dropped(world2):
    world2.run(rank_reallocated_buffer)


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
