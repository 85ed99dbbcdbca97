"""all_reduce of sparse COO tensors (SUM), as Gloo serves them: DDP over a model with
nn.Embedding(sparse=True) trains on qccl exactly as on Gloo."""

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from world import run_in_fresh_world


def _sparse_of(rank, size=(50, 3)):
    """A different, overlapping set of rows per rank, uncoalesced (row 2 twice)."""
    g = torch.Generator().manual_seed(rank)
    rows = torch.tensor([2, 2 + rank, 7 * rank % size[0], 2])
    values = torch.randn(len(rows), size[1], generator=g)
    return torch.sparse_coo_tensor(rows.unsqueeze(0), values, size, check_invariants=True)


def rank_sparse_all_reduce(ctx):
    got, reference = _sparse_of(ctx.rank), _sparse_of(ctx.rank)
    dist.all_reduce(got)
    dist.all_reduce(reference, group=ctx.gloo)
    got, reference = got.coalesce(), reference.coalesce()
    exact = sum(_sparse_of(r).to_dense().double() for r in range(ctx.size))
    return (torch.equal(got.indices(), reference.indices()) and torch.equal(got.values(), reference.values()),
            torch.allclose(got.to_dense().double(), exact, rtol=0, atol=1e-5))


def test_sparse_all_reduce_equals_glooes(world):
    for same_as_gloo, close_to_exact in world.run(rank_sparse_all_reduce):
        assert same_as_gloo and close_to_exact


class _Bag(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(100, 16, sparse=True)
        self.head = nn.Linear(16, 4)

    def forward(self, ids):
        return self.head(self.embedding(ids).mean(dim=1))


def _train(group, rank, steps=20):
    torch.manual_seed(0)
    model = DDP(_Bag(), process_group=group)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    data = torch.Generator().manual_seed(100 + rank)
    for _ in range(steps):
        ids = torch.randint(0, 100, (8, 5), generator=data)
        target = torch.randint(0, 4, (8,), generator=data)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(ids), target).backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def rank_ddp_sparse(ctx):
    qccl_params, gloo_params = _train(None, ctx.rank), _train(ctx.gloo, ctx.rank)
    trained = not torch.equal(qccl_params[0], _Bag().embedding.weight)
    return trained and all(torch.equal(q, g) for q, g in zip(qccl_params, gloo_params))


def test_ddp_with_a_sparse_embedding_trains_as_on_gloo(world2):
    assert all(world2.run(rank_ddp_sparse))


def rank_sparse_refusals(ctx):
    import qccl  # noqa: F401

    errors = []
    try:
        dist.all_reduce(_sparse_of(ctx.rank), op=dist.ReduceOp.MAX)
    except TypeError as error:
        errors.append(str(error))
    after = _sparse_of(ctx.rank)
    dist.all_reduce(after)  # the group goes on
    # One rank sparse, the other dense, of the same size: both raise, never a wrong sum.
    mixed = _sparse_of(ctx.rank) if ctx.rank == 0 else torch.zeros(50, 3)
    try:
        dist.all_reduce(mixed)
    except ValueError as error:
        errors.append(str(error))
    return errors


def test_sparse_refusals():
    for errors in run_in_fresh_world(2, rank_sparse_refusals):
        assert len(errors) == 2, errors
        assert errors[0].startswith("qccl: all_reduce") and "ReduceOp.SUM" in errors[0], errors
        assert errors[1].startswith("qccl:") and "all_reduce" in errors[1], errors
