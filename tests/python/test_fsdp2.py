"""FSDP2 (fully_shard) on qccl trains exactly as on Gloo: same seed, same data, bit-identical
parameters after training, and a DCP save of the sharded state loads back unchanged. HSDP
(a 2-D mesh: replicate x shard) likewise at 4 ranks."""

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard

STEPS = 10


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))


def _sharded(group_or_mesh):
    """The model, each Linear and the whole sharded over a group or a mesh (FSDP2's usual
    wrapping; a 2-D mesh gives HSDP)."""
    model = _model()
    mesh = group_or_mesh if isinstance(group_or_mesh, DeviceMesh) else DeviceMesh.from_group(group_or_mesh, "cpu")
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _train(group_or_mesh, rank):
    model = _sharded(group_or_mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(10 + rank)
    for _ in range(STEPS):
        x = torch.randn(16, 12, generator=data)
        y = torch.randint(0, 3, (16,), generator=data)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model


def rank_fsdp2(ctx, directory):
    qccl_model = _train(dist.group.WORLD, ctx.rank)
    gloo_model = _train(ctx.gloo, ctx.rank)
    full = [p.full_tensor() for p in qccl_model.parameters()]
    same = all(torch.equal(q, g.full_tensor()) for q, g in zip(full, gloo_model.parameters()))
    trained = not torch.equal(full[0], _model()[0].weight)

    dcp.save(qccl_model.state_dict(), checkpoint_id=directory)
    restored = _sharded(dist.group.WORLD)
    with torch.no_grad():
        for p in restored.parameters():
            p.zero_()
    state = restored.state_dict()
    dcp.load(state, checkpoint_id=directory)
    restored.load_state_dict(state)
    round_trip = all(torch.equal(a.full_tensor(), b) for a, b in zip(restored.parameters(), full))
    return same, trained, round_trip


def test_fsdp2_matches_gloo_and_round_trips_through_dcp(world, tmp_path):
    for same, trained, round_trip in world.run(rank_fsdp2, str(tmp_path / "fsdp2")):
        assert trained, "nothing trained"
        assert same, "FSDP2 on qccl differs from FSDP2 on Gloo"
        assert round_trip, "the DCP checkpoint did not load back"


def _hsdp_mesh(backend):
    """A 2 x 2 mesh over 4 ranks (dim 0 replicates, dim 1 shards) on `backend`'s groups."""
    layout = torch.arange(4).view(2, 2)
    rank = dist.get_rank()
    groups = {}
    for dim, lines in (("replicate", layout.t()), ("shard", layout)):
        for line in lines.tolist():
            group = dist.new_group(line, backend=backend)  # every rank creates every group
            if rank in line:
                groups[dim] = group
    return DeviceMesh.from_group([groups["replicate"], groups["shard"]], "cpu", mesh=layout,
                                 mesh_dim_names=("replicate", "shard"))


def rank_hsdp(ctx):
    qccl_model = _train(_hsdp_mesh("qccl"), ctx.rank)
    gloo_model = _train(_hsdp_mesh("gloo"), ctx.rank)
    return all(torch.equal(q.full_tensor(), g.full_tensor())
               for q, g in zip(qccl_model.parameters(), gloo_model.parameters()))


def test_hsdp_matches_gloo(world):
    if world.size != 4:
        pytest.skip("HSDP here is a 2 x 2 mesh")
    assert all(world.run(rank_hsdp))
