"""broadcast, all_gather (+ into_tensor, coalesced forms), gather, scatter, all_to_all
(+ single, uneven) and barrier on qccl. Data movement has an exact expected result:
every rank can rebuild every other rank's input."""

import torch
import torch.distributed as dist

from reference import DTYPES, make_input

MOVED_DTYPES = DTYPES + [torch.complex64, torch.float8_e4m3fn]


def rebuild(rank, dtype, numel=11, seed=0):
    if dtype is torch.complex64:
        return torch.complex(make_input(rank, torch.float32, numel, seed), make_input(rank + 100, torch.float32, numel, seed))
    if dtype is torch.float8_e4m3fn:
        return make_input(rank, torch.float32, numel, seed).to(dtype)
    return make_input(rank, dtype, numel, seed)


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def rank_broadcast(ctx):
    for root in {0, ctx.size - 1}:
        for dtype in MOVED_DTYPES:
            expected = rebuild(root, dtype).view(11, 1)
            tensor = expected.clone() if ctx.rank == root else torch.zeros_like(expected)
            dist.broadcast(tensor, src=root)
            assert same(tensor, expected), f"broadcast {dtype} from {root}"


def test_broadcast(world):
    world.run(rank_broadcast)


def rank_all_gather(ctx):
    n = ctx.size
    for dtype in MOVED_DTYPES:
        inputs = [rebuild(r, dtype).view(1, 11) for r in range(n)]
        outputs = [torch.zeros_like(inputs[0]) for _ in range(n)]
        dist.all_gather(outputs, inputs[ctx.rank])
        assert all(same(o, i) for o, i in zip(outputs, inputs)), f"all_gather {dtype}"

        flat = torch.zeros(n * 11, dtype=dtype)
        work = dist.all_gather_into_tensor(flat, inputs[ctx.rank], async_op=True)
        work.wait()
        assert same(flat, torch.cat(inputs, dim=1).view(-1)), f"all_gather_into_tensor {dtype}"


def test_all_gather(world):
    world.run(rank_all_gather)


def rank_all_gather_coalesced(ctx):
    n = ctx.size
    for dtype in [torch.float32, torch.int16, torch.bool]:
        sizes = [3, 4, 1]  # Python's all_gather_coalesced takes one dtype per call
        inputs = [[rebuild(r, dtype, k, seed=i) for i, k in enumerate(sizes)] for r in range(n)]
        outputs = [[torch.zeros(k, dtype=dtype) for k in sizes] for _ in range(n)]
        dist.all_gather_coalesced(outputs, inputs[ctx.rank])
        for r in range(n):
            for i in range(len(sizes)):
                assert same(outputs[r][i], inputs[r][i]), f"all_gather_coalesced {dtype} rank {r} #{i}"

    # all_gather_into_tensor under the coalescing manager: one C++ call for a list of
    # mixed dtypes.
    specs = [(torch.float32, 3), (torch.int16, 4), (torch.bool, 2), (torch.float64, 1)]
    inputs = [[rebuild(r, d, k, seed=i) for i, (d, k) in enumerate(specs)] for r in range(n)]
    flats = [torch.zeros(n * k, dtype=d) for d, k in specs]
    with dist._coalescing_manager():
        for flat, t in zip(flats, inputs[ctx.rank]):
            dist.all_gather_into_tensor(flat, t)
    for i, flat in enumerate(flats):
        assert same(flat, torch.cat([inputs[r][i] for r in range(n)])), f"into_tensor_coalesced #{i}"


def test_all_gather_coalesced(world):
    world.run(rank_all_gather_coalesced)


def rank_gather_scatter(ctx):
    n = ctx.size
    for root in {0, n - 1}:
        for dtype in MOVED_DTYPES:
            inputs = [rebuild(r, dtype) for r in range(n)]
            gathered = [torch.zeros_like(inputs[0]) for _ in range(n)] if ctx.rank == root else None
            dist.gather(inputs[ctx.rank], gathered, dst=root)
            if ctx.rank == root:
                assert all(same(g, i) for g, i in zip(gathered, inputs)), f"gather {dtype}"

            pieces = [rebuild(r, dtype, seed=5) for r in range(n)]
            out = torch.zeros_like(pieces[0])
            dist.scatter(out, pieces if ctx.rank == root else None, src=root)
            assert same(out, pieces[ctx.rank]), f"scatter {dtype}"


def test_gather_and_scatter(world):
    world.run(rank_gather_scatter)


def block(src, dst, rows, dtype):
    """What rank `src` sends to rank `dst` in the all-to-all tests."""
    return rebuild(src, dtype, numel=rows * 3, seed=dst + 1).view(rows, 3)


def rank_all_to_all(ctx):
    n, me = ctx.size, ctx.rank
    for dtype in [torch.float32, torch.int16, torch.bool, torch.bfloat16]:
        # Uneven: rank s sends s + d + 1 rows to rank d.
        send = [block(me, d, me + d + 1, dtype) for d in range(n)]
        recv = [torch.zeros(s + me + 1, 3, dtype=dtype) for s in range(n)]
        dist.all_to_all(recv, send)
        for s in range(n):
            assert same(recv[s], block(s, me, s + me + 1, dtype)), f"all_to_all {dtype} from {s}"

        # all_to_all_single, even.
        inp = torch.cat([block(me, d, 2, dtype) for d in range(n)])
        out = torch.zeros_like(inp)
        dist.all_to_all_single(out, inp)
        assert same(out, torch.cat([block(s, me, 2, dtype) for s in range(n)])), f"even single {dtype}"

        # all_to_all_single, uneven splits.
        in_splits = [me + d + 1 for d in range(n)]
        out_splits = [s + me + 1 for s in range(n)]
        inp = torch.cat([block(me, d, in_splits[d], dtype) for d in range(n)])
        out = torch.zeros(sum(out_splits), 3, dtype=dtype)
        dist.all_to_all_single(out, inp, out_splits, in_splits)
        expected = torch.cat([block(s, me, out_splits[s], dtype) for s in range(n)])
        assert same(out, expected), f"uneven single {dtype}"


def test_all_to_all(world):
    world.run(rank_all_to_all)


def rank_barrier(ctx):
    dist.barrier()
    work = dist.barrier(async_op=True)
    work.wait()
    assert work.is_completed()
    return True


def test_barrier(world):
    assert world.run(rank_barrier) == [True] * world.size


def rank_barrier_waits(ctx):
    """The last rank arrives only once every other rank has entered the barrier (it
    waits for their marks in the store); no rank may leave before it arrived. Returns
    how many ranks each rank saw arrived when its barrier returned, per round."""
    store = dist.distributed_c10d._get_default_store()
    seen = []
    for round_ in range(10):
        key = f"barrier_waits/{round_}"
        if ctx.rank == ctx.size - 1:
            while int(store.add(key, 0)) < ctx.size - 1:
                pass  # polls the store: the others are in their barrier by now, or soon
        store.add(key, 1)
        dist.barrier()
        seen.append(int(store.add(key, 0)))
    return seen


def test_barrier_waits_for_the_last_rank(world):
    assert world.run(rank_barrier_waits) == [[world.size] * 10] * world.size
