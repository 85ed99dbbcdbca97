"""qccl.create_backend / create_process_group: a qccl group built from a store, as torchft
builds one on every quorum change; qccl.stats() reaching it through wrappers."""

import datetime

import torch
import torch.distributed as dist

import qccl
from world import run_in_fresh_world

TIMEOUT = datetime.timedelta(seconds=60)


def _store(name):
    """A store of this test's own, shared by the world's ranks."""
    return dist.PrefixStore(name, dist.distributed_c10d._get_default_store())


class _Delegating(dist.ProcessGroup):
    """Holds its process group as torchft's ProcessGroupWrapper does (`parent`)."""

    def __init__(self, pg):
        super().__init__(pg.rank(), pg.size())
        self._inner = pg

    @property
    def parent(self):
        return self._inner


def rank_factory(ctx):
    rank, size = ctx.rank, ctx.size
    int8 = qccl.Options(codec="int8", min_bytes=0)
    backend = qccl.create_backend(_store("factory/a"), rank, size, timeout=TIMEOUT, options=int8)
    torch.manual_seed(rank)
    x = torch.randn(10_001)
    exact = x.double()
    dist.all_reduce(exact, group=ctx.gloo)
    got = x.clone()
    backend.allreduce([got]).wait()
    # Two int8 stages, each off by at most half a step per contribution.
    bound = (size + 1) * exact.abs().max().item() / 127
    error = (got.double() - exact).abs().max().item()
    everyone = [torch.empty_like(got) for _ in range(size)]
    dist.all_gather(everyone, got, group=ctx.gloo)
    counters = qccl.stats(backend)

    # Created again on the same store, as on a new quorum: its keys do not meet the first's.
    again = qccl.create_backend(_store("factory/a"), rank, size, timeout=TIMEOUT)
    ints = torch.arange(5, dtype=torch.int32) * (rank + 1)
    again.allreduce([ints]).wait()
    expected = torch.arange(5, dtype=torch.int32) * (rank + 1)
    dist.all_reduce(expected, group=ctx.gloo)

    group = qccl.create_process_group(_store("factory/b"), rank, size, timeout=TIMEOUT, options=int8)
    y = torch.full((3,), float(rank))
    dist.all_reduce(y, group=group)  # below the codec's gain: exact
    wrapped = _Delegating(group)
    return {
        "error": error, "bound": bound,
        "identical": all(torch.equal(e, everyone[0]) for e in everyone),
        "compressed": counters["compressed_tensors"], "codec": counters["settings"]["codec"],
        "again": torch.equal(ints, expected),
        "group": y.tolist() == [float(sum(range(size)))] * 3,
        "through_group": qccl.stats(group)["calls"], "through_wrapper": qccl.stats(wrapped)["calls"],
        "gloo_refused": _refusal(ctx.gloo),
    }


def _refusal(group):
    try:
        qccl.stats(group)
    except ValueError as error:
        return str(error)
    return "accepted"


def test_create_backend_and_process_group():
    for r in run_in_fresh_world(2, rank_factory):
        assert 0 < r["error"] <= r["bound"], r
        assert r["identical"] and r["compressed"] == 1 and r["codec"] == "int8", r
        assert r["again"] and r["group"], r
        assert r["through_group"] == 1 and r["through_wrapper"] == 1, r
        assert "qccl:" in r["gloo_refused"] and "ProcessGroupGloo" in r["gloo_refused"], r


def test_create_backend_refuses_bad_arguments():
    store = dist.HashStore()
    for call, kind, words in [
        (lambda: qccl.create_backend(store, 2, 2), ValueError, "rank 2"),
        (lambda: qccl.create_backend(store, 0, 1, timeout=5), TypeError, "timedelta"),
        (lambda: qccl.create_backend(store, 0, 1, options={"codec": "int8"}), TypeError, "qccl.Options"),
    ]:
        try:
            call()
        except kind as error:
            assert "qccl:" in str(error) and words in str(error), error
        else:
            raise AssertionError(f"accepted: {words}")
