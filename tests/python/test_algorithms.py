"""qccl.algorithms: LocalSGD and DiLoCo against parameter averaging computed by hand over
Gloo, replicas bit-identical after every sync with every codec, the fragment schedule, a
checkpoint that resumes bit for bit, and a clear error for replicas with different plans."""

import pathlib

import pytest
import torch
import torch.distributed as dist
from torch import nn

import qccl
from qccl.algorithms import DiLoCo, LocalSGD
from qccl.algorithms.diloco import split_into_fragments
from test_compression import group_for
from world import run_torchrun

STEPS = 6


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))


def _batches(rank, steps):
    data = torch.Generator().manual_seed(50 + rank)
    return [(torch.randn(16, 10, generator=data), torch.randn(16, 1, generator=data)) for _ in range(steps)]


def _train_step(model, wrapper, x, y):
    wrapper.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    wrapper.step()


def _bytes(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).view(torch.uint8)


def _identical_across_ranks(ctx, model):
    mine = _bytes(model)
    copies = [torch.empty_like(mine) for _ in range(ctx.size)]
    dist.all_gather(copies, mine, group=ctx.gloo)
    return all(torch.equal(c, copies[0]) for c in copies)


def _averaged_sgd_step(reference, optimizer, x, y, gloo):
    """One step of the reference: plain SGD, then parameter averaging by hand."""
    optimizer.zero_grad()
    nn.functional.mse_loss(reference(x), y).backward()
    optimizer.step()
    _average_by_hand(reference, gloo)


def _average_by_hand(model, gloo):
    """Parameter averaging over Gloo: the reference."""
    with torch.no_grad():
        flat = torch.cat([p.reshape(-1) for p in model.parameters()])
        dist.all_reduce(flat, group=gloo)
        flat /= dist.get_world_size(gloo)
        offset = 0
        for p in model.parameters():
            p.copy_(flat[offset:offset + p.numel()].view(p.shape))
            offset += p.numel()


def rank_local_sgd_every_step_is_averaging(ctx):
    batches = _batches(ctx.rank, STEPS)
    model = _model()
    local = LocalSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), sync_every=1)
    reference = _model()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for x, y in batches:
        _train_step(model, local, x, y)
        _averaged_sgd_step(reference, optimizer, x, y, ctx.gloo)
    return torch.equal(_bytes(model), _bytes(reference))


def test_local_sgd_with_sync_every_1_is_parameter_averaging(world2):
    assert all(world2.run(rank_local_sgd_every_step_is_averaging))


def rank_diloco_plain_outer_sgd_is_averaging(ctx):
    batches = _batches(ctx.rank, STEPS)
    model = _model()
    diloco = DiLoCo(model, torch.optim.SGD(model.parameters(), lr=0.1),
                    torch.optim.SGD(model.parameters(), lr=1.0), sync_every=1)
    reference = _model()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    worst = 0.0
    for x, y in batches:
        _train_step(model, diloco, x, y)
        _averaged_sgd_step(reference, optimizer, x, y, ctx.gloo)
        for p, q in zip(model.parameters(), reference.parameters()):
            worst = max(worst, (p - q).abs().max().item())
    return worst


def test_diloco_with_plain_outer_sgd_and_sync_every_1_is_parameter_averaging(world2):
    # synced - mean(synced - p_i) equals mean(p_i) up to float32 rounding of the difference
    assert all(worst < 1e-6 for worst in world2.run(rank_diloco_plain_outer_sgd_is_averaging))


def rank_replicas_identical(ctx, codec, fragments, delay):
    group = group_for("algorithms", codec=codec, error_feedback=codec == "int4", min_bytes=0)
    model = _model()
    diloco = DiLoCo(model, torch.optim.AdamW(model.parameters(), lr=1e-2),
                    torch.optim.SGD(model.parameters(), lr=0.7, momentum=0.9, nesterov=True),
                    sync_every=4, fragments=fragments, sync_delay=delay, group=group)
    checks = []
    for step, (x, y) in enumerate(_batches(ctx.rank, 16), 1):
        _train_step(model, diloco, x, y)
        if delay == 0 and diloco.syncs_at(step) == list(range(fragments)):
            checks.append(_identical_across_ranks(ctx, model))
        synced = torch.cat([t.reshape(-1) for fragment in diloco._synced for t in fragment]).view(torch.uint8)
        copies = [torch.empty_like(synced) for _ in range(ctx.size)]
        dist.all_gather(copies, synced, group=ctx.gloo)
        checks.append(all(torch.equal(c, copies[0]) for c in copies))
    local = LocalSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), sync_every=2, group=group)
    for x, y in _batches(ctx.rank, 4):
        _train_step(model, local, x, y)
    checks.append(_identical_across_ranks(ctx, model))
    return all(checks) and len(checks) > 0


@pytest.mark.parametrize("codec", ["none", "bf16", "int8", "int4"])
def test_replicas_are_bit_identical_after_every_sync(world, codec):
    assert all(world.run(rank_replicas_identical, codec, 1, 0))
    assert all(world.run(rank_replicas_identical, codec, 3, 1))  # the synced parameters, streaming


def test_fragments_cover_every_parameter_once_per_sync_every():
    model = _model()
    parameters = list(model.parameters())
    for fragments in (1, 2, 3, 5):
        runs = split_into_fragments(parameters, fragments)
        assert len(runs) == fragments and all(runs)
        assert [id(p) for run in runs for p in run] == [id(p) for p in parameters]
        diloco = DiLoCo(model, torch.optim.SGD(parameters, lr=0.1), torch.optim.SGD(parameters, lr=1.0),
                        sync_every=10, fragments=fragments)
        for start in (1, 10, 37):
            synced = [f for step in range(start, start + 10) for f in diloco.syncs_at(step)]
            assert sorted(synced) == list(range(fragments)), (fragments, start, synced)


def rank_checkpoint(ctx, directory):
    options = dict(codec="int4", error_feedback=True, stochastic=True, min_bytes=0)
    batches = _batches(ctx.rank, 14)

    def make(group):
        model = _model()
        diloco = DiLoCo(model, torch.optim.AdamW(model.parameters(), lr=1e-2),
                        torch.optim.SGD(model.parameters(), lr=0.7, momentum=0.9, nesterov=True),
                        sync_every=4, fragments=2, sync_delay=1, group=group)
        return model, diloco

    group = group_for("algorithms run", **options)
    model, diloco = make(group)
    for step, (x, y) in enumerate(batches, 1):
        _train_step(model, diloco, x, y)
        if step == 6:  # fragment 1's sync, posted after step 6, is on the wire (applied at 7)
            path = f"{directory}/rank{ctx.rank}.pt"
            torch.save({"model": model.state_dict(), "diloco": diloco.state_dict(),
                        "qccl": qccl.state_dict(group)}, path)
    original = _bytes(model)

    resumed_group = group_for("algorithms resumed", **options)
    model, diloco = make(resumed_group)
    state = torch.load(path, weights_only=False)
    model.load_state_dict(state["model"])
    diloco.load_state_dict(state["diloco"])
    qccl.load_state_dict(resumed_group, state["qccl"])
    assert list(diloco.state_dict()["pending"]) == [1]
    for x, y in batches[6:]:
        _train_step(model, diloco, x, y)
    return torch.equal(_bytes(model), original)


def test_checkpoint_resumes_bit_for_bit(world2, tmp_path):
    assert all(world2.run(rank_checkpoint, str(tmp_path)))


def rank_mismatched_plans(ctx):
    model = _model()
    diloco = DiLoCo(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(model.parameters(), lr=1.0),
                    sync_every=2 if ctx.rank == 0 else 3)
    with pytest.raises(ValueError) as caught:
        for x, y in _batches(ctx.rank, 3):
            _train_step(model, diloco, x, y)
    tensor = torch.ones(2)
    dist.all_reduce(tensor)  # the group stays usable
    return str(caught.value)


def test_replicas_with_different_plans_get_a_clear_error(world2):
    for rank, message in enumerate(world2.run(rank_mismatched_plans)):
        assert message.startswith(f"qccl: the replicas' synchronization plans differ (this is replica {rank}: "
                                  f"DiLoCo(sync_every={2 if rank == 0 else 3}, fragments=1, sync_delay=0))"), message


def test_bad_settings_are_refused():
    model = _model()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    for kwargs, words in [(dict(sync_every=0), "sync_every >= 1"), (dict(sync_every=4, fragments=5), "fragments"),
                          (dict(sync_every=4, sync_delay=4), "sync_delay < sync_every")]:
        with pytest.raises(ValueError, match=words):
            DiLoCo(model, sgd, sgd, **kwargs)
    with pytest.raises(ValueError, match="sync_every >= 1"):
        LocalSGD(model, sgd, sync_every=0)


def _final(output):
    """(final loss, bytes sent per token per rank) from the example's last line."""
    line = [line for line in output.splitlines() if "final loss" in line][-1]
    loss = float(line.split("final loss ")[1].split()[0])
    sent = float(line.split("tokens/s, ")[1].split()[0])
    return loss, sent


EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory):
    """(final loss, bytes per token) of exact DDP, 200 steps at 2 ranks: the reference of
    both examples below."""
    return _final(run_torchrun(EXAMPLES / "train_diloco.py", "--algorithm", "ddp",
                               cwd=tmp_path_factory.mktemp("ddp"), env={"QCCL_CODEC": "none"}))


def test_diloco_example_trains_within_5_percent_of_ddp(tmp_path, ddp_reference):
    """examples/train_diloco.py, 200 inner steps at 2 ranks: DDP exact against streaming
    DiLoCo (H = 50, 2 fragments, 5 steps of overlap) with int4 outer gradients."""
    ddp = ddp_reference
    diloco = _final(run_torchrun(EXAMPLES / "train_diloco.py", "--algorithm", "diloco", "--sync-every", 50,
                                 "--fragments", 2, "--sync-delay", 5, cwd=tmp_path,
                                 env={"QCCL_CODEC": "int4", "QCCL_ERROR_FEEDBACK": "1"}))
    print(f"DDP: loss {ddp[0]}, {ddp[1]} B/token; DiLoCo: loss {diloco[0]}, {diloco[1]} B/token")
    assert abs(diloco[0] - ddp[0]) <= 0.05 * ddp[0], (ddp, diloco)
    assert diloco[1] * 100 < ddp[1], "H = 50 with int4 sends over 100x fewer bytes than exact DDP"


def test_parameter_server_example_trains_within_5_percent_of_ddp(tmp_path, ddp_reference):
    """examples/parameter_server.py: 1 server and 2 workers of 200 steps each (DDP's
    tokens), int8 pushes: the loss stays within 5% of DDP's with under a third of its bytes."""
    ddp = ddp_reference
    ps = _final(run_torchrun(EXAMPLES / "parameter_server.py", cwd=tmp_path, nproc=3,
                             env={"QCCL_P2P_CODEC": "int8", "OMP_NUM_THREADS": "1"}))
    print(f"DDP: loss {ddp[0]}, {ddp[1]} B/token; parameter server: loss {ps[0]}, {ps[1]} B/token")
    assert abs(ps[0] - ddp[0]) <= 0.05 * ddp[0], (ddp, ps)
    assert ps[1] * 3 < ddp[1], (ddp, ps)
