"""FSDP2 (fully_shard) on qccl trains exactly as on Gloo: same seed, same data, bit-identical
parameters after training, and a DCP save of the sharded state loads back unchanged. HSDP
(a 2-D mesh: replicate x shard) likewise at 4 ranks. With int8 gradients and bf16 weights
a small language model ends within 2% of the exact final loss."""

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard

import qccl

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


# --- compressed FSDP2 (issue 18): a small transformer language model on real text ---------

TRAIN_STEPS = 100


class TinyLM(nn.Module):
    """A decoder over bytes: embedding, two pre-norm transformer blocks, a head."""

    def __init__(self, width=64, context=32):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(256, width)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(2)
        )
        self.head = nn.Linear(width, 256)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(context))

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, src_mask=self.causal, is_causal=True)
        return self.head(x)


def _corpus():
    from pydoc_data.topics import topics  # Python's own documentation: real text, no download

    text = "\n\n".join(topics[key] for key in sorted(topics))
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def _train_lm(group, rank, divide_factor=None):
    """FSDP2 over `group` (each block, then the root), AdamW, TRAIN_STEPS steps; returns the
    final loss (mean of the last 10 steps over all ranks) and the full parameters."""
    model = TinyLM()
    mesh = DeviceMesh.from_group(group, "cpu")
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    if divide_factor is not None:
        model.set_gradient_divide_factor(divide_factor)  # FSDP2 then reduce-scatters with PREMUL_SUM
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    corpus = _corpus()
    data = torch.Generator().manual_seed(100 + rank)
    losses = []
    for _ in range(TRAIN_STEPS):
        starts = torch.randint(0, len(corpus) - 33, (8,), generator=data).tolist()
        window = torch.stack([corpus[s:s + 33] for s in starts])
        loss = nn.functional.cross_entropy(model(window[:, :-1]).reshape(-1, 256), window[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    final = torch.stack(losses[-10:]).mean().reshape(1)
    dist.all_reduce(final, group=group)
    return final.item() / dist.get_world_size(group), [p.full_tensor() for p in model.parameters()]


def rank_compressed_fsdp2(ctx):
    from test_compression import group_for

    gloo_loss, gloo_params = _train_lm(ctx.gloo, ctx.rank)
    exact_loss, exact_params = _train_lm(dist.group.WORLD, ctx.rank)  # codec none
    identical = all(torch.equal(a, b) for a, b in zip(exact_params, gloo_params))

    compressed = group_for("fsdp2 int8", codec="int8", error_feedback=True, allgather_codec="bf16")
    qccl.reset_stats(compressed)
    int8_loss, _ = _train_lm(compressed, ctx.rank)
    stats = qccl.stats(compressed)

    # A custom divide factor: FSDP2 reduce-scatters with PREMUL_SUM, which Gloo lacks, so
    # the exact reference is qccl's exact path.
    factor = 2.0 * ctx.size
    premul_exact_loss, _ = _train_lm(group_for("fsdp2 exact"), ctx.rank, factor)
    premul = group_for("fsdp2 int8 premul", codec="int8")
    qccl.reset_stats(premul)
    premul_loss, _ = _train_lm(premul, ctx.rank, factor)
    premul_compressed = qccl.stats(premul)["reduce_scatter"]["compressed_tensors"]
    return dict(identical=identical, gloo=gloo_loss, int8=int8_loss, stats=stats,
                premul_exact=premul_exact_loss, premul=premul_loss, premul_compressed=premul_compressed)


def test_fsdp2_trains_with_compressed_gradients_and_weights(world2):
    result = world2.run(rank_compressed_fsdp2)[0]
    assert result["identical"], "FSDP2 on qccl with codec none differs from Gloo"
    scatter, gather = result["stats"]["reduce_scatter"], result["stats"]["all_gather"]
    assert scatter["compressed_tensors"] >= TRAIN_STEPS * 3, scatter  # a block, a block, the root per step
    assert gather["compressed_tensors"] >= TRAIN_STEPS * 3, gather
    assert scatter["compression_ratio"] > 3.5 and gather["compression_ratio"] > 1.9
    print(f"final loss: Gloo {result['gloo']:.4f}, int8 + bf16 weights {result['int8']:.4f}; "
          f"PREMUL_SUM exact {result['premul_exact']:.4f}, int8 {result['premul']:.4f}")
    assert abs(result["int8"] - result["gloo"]) <= 0.02 * result["gloo"], result
    assert result["premul_compressed"] >= TRAIN_STEPS * 3, result
    assert abs(result["premul"] - result["premul_exact"]) <= 0.02 * result["premul_exact"], result
