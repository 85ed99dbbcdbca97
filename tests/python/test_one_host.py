"""Ranks of one host go through shared memory (issue 28): every collective it serves
(all_reduce, reduce, broadcast, every all_gather form, gather, scatter,
reduce_scatter_tensor, both all_to_alls, barrier) and point-to-point, at 2, 3 and 4 ranks, against a float64 computation on inputs Gloo gathered;
ranks bit-identical and repeatable; a rank SIGKILLed mid-collective makes the others raise
within the timeout; nothing is left in /dev/shm; force_network turns it off.

The rest of the suite runs on one host too, so every op's own tests (test_data_movement,
test_reductions, test_errors, ...) run with shared memory on as well."""

import glob
import multiprocessing as mp
import os
import signal
import time

import pytest
import torch
import torch.distributed as dist

import qccl
from world import World, free_port, init_loopback_rank, run_in_fresh_world, spawn_ranks

# Sizes in elements: empty, one, odd, and more than one 1 MiB round of float64.
SIZES = [0, 1, 1001, 300_000]


def _shared_memory(ctx):
    return qccl.stats()["shared_memory"]


ALL_REDUCES = [(torch.float64, dist.ReduceOp.SUM), (torch.float32, dist.ReduceOp.AVG),
               (torch.int64, dist.ReduceOp.SUM), (torch.int32, dist.ReduceOp.MAX),
               (torch.float32, dist.ReduceOp.MIN), (torch.uint8, dist.ReduceOp.BOR),
               (torch.bfloat16, dist.ReduceOp.SUM), (torch.complex64, dist.ReduceOp.SUM)]


def _reference(ctx, t, op):
    """The reduction of every rank's `t`, computed here in 64 bits from inputs that Gloo
    gathered, not by qccl."""
    wide = torch.complex128 if t.is_complex() else torch.float64 if t.is_floating_point() else torch.int64
    if t.numel() == 0:
        return t.to(wide)  # Gloo's collectives on empty tensors can leave its ranks out of step
    inputs = [torch.empty(t.shape, dtype=wide) for _ in range(ctx.size)]
    dist.all_gather(inputs, t.to(wide), group=ctx.gloo)
    stack = torch.stack(inputs)
    if op == dist.ReduceOp.SUM:
        return stack.sum(0)
    if op == dist.ReduceOp.AVG:
        return stack.mean(0)
    if op == dist.ReduceOp.MAX:
        return stack.max(0).values if t.numel() else stack.sum(0)
    if op == dist.ReduceOp.MIN:
        return stack.min(0).values if t.numel() else stack.sum(0)
    out = inputs[0].clone()
    for other in inputs[1:]:
        out |= other
    return out


def _every_op(ctx, seed):
    """(what, n, qccl's result, the reference) for every op the channel serves."""
    g = torch.Generator().manual_seed(seed * 100 + ctx.rank)
    root = 1 % ctx.size
    out = []
    for n in SIZES:
        x = torch.randn(n, generator=g, dtype=torch.float64)
        for dtype, op in ALL_REDUCES:
            if dtype.is_floating_point or dtype.is_complex:
                t = (x * 50).to(dtype)
            else:
                t = (x * 50).to(torch.int64).abs().to(dtype)
            mine = t.clone()
            dist.all_reduce(mine, op=op)
            ref = _reference(ctx, t, op)
            if dtype == torch.bfloat16:
                # Summed in bfloat16, as Gloo does: each of the size - 1 additions rounds
                # (unit roundoff 2**-8), then the reference's own rounding.
                bound = (ctx.size - 1) * 2.0 ** -8 * _reference(ctx, t.abs(), op) + 2.0 ** -8 * ref.abs()
                ref = (ref, bound)
            out.append((f"all_reduce {dtype} {op}", n, mine, ref))
        t = x.clone() if ctx.rank == root else torch.zeros(n, dtype=torch.float64)
        dist.broadcast(t, src=root)
        out.append(("broadcast", n, t, _reference(ctx, x * (ctx.rank == root), dist.ReduceOp.SUM)))
        gathered = torch.empty(n * ctx.size, dtype=torch.float64)
        dist.all_gather_into_tensor(gathered, x)
        ref = torch.cat([_reference(ctx, x * (ctx.rank == r), dist.ReduceOp.SUM) for r in range(ctx.size)])
        out.append(("all_gather_into_tensor", n, gathered, ref))
        pieces = [torch.empty(n, dtype=torch.float64) for _ in range(ctx.size)]
        dist.all_gather(pieces, x)
        out.append(("all_gather", n, torch.cat(pieces), ref))
        pieces = [torch.zeros(n, dtype=torch.float64) for _ in range(ctx.size)] if ctx.rank == root else None
        dist.gather(x, pieces, dst=root)
        if ctx.rank == root:
            out.append(("gather", n, torch.cat(pieces), ref))
        everyones = torch.randn(n * ctx.size, generator=g, dtype=torch.float64)
        mine = torch.zeros(n, dtype=torch.float64)
        blocks = [everyones[n * r:n * (r + 1)] for r in range(ctx.size)]
        dist.scatter(mine, blocks if ctx.rank == root else None, src=root)
        roots = _reference(ctx, everyones * (ctx.rank == root), dist.ReduceOp.SUM)
        out.append(("scatter", n, mine, roots[n * ctx.rank:n * (ctx.rank + 1)]))
        big = torch.randn(n * ctx.size, generator=g, dtype=torch.float64)
        shard = torch.empty(n, dtype=torch.float64)
        dist.reduce_scatter_tensor(shard, big)
        out.append(("reduce_scatter_tensor", n, shard, _reference(ctx, big, dist.ReduceOp.SUM)[n * ctx.rank:n * (ctx.rank + 1)]))
        # all_to_all with uneven splits (rank s sends rank d (s + 2d) % 3 + n // size
        # elements), both forms, against Gloo's all_to_all_single on the same inputs.
        sends = [n // ctx.size + (ctx.rank + 2 * d) % 3 for d in range(ctx.size)]
        receives = [n // ctx.size + (s + 2 * ctx.rank) % 3 for s in range(ctx.size)]
        inp = torch.randn(sum(sends), generator=g, dtype=torch.float64)
        ref = torch.empty(sum(receives), dtype=torch.float64)
        dist.all_to_all_single(ref, inp, receives, sends, group=ctx.gloo)
        got = torch.empty(sum(receives), dtype=torch.float64)
        dist.all_to_all_single(got, inp, receives, sends)
        out.append(("all_to_all_single", n, got, ref))
        pieces = [torch.empty(k, dtype=torch.float64) for k in receives]
        dist.all_to_all(pieces, list(inp.split(sends)))
        out.append(("all_to_all", n, torch.cat(pieces), ref))
        # all_gather_into_tensor, coalesced (as FSDP2 calls it): two inputs of other sizes.
        parts = [x, x[: n // 2] * 3]
        flats = [torch.empty(p.numel() * ctx.size, dtype=torch.float64) for p in parts]
        with dist._coalescing_manager():
            for flat, part in zip(flats, parts):
                dist.all_gather_into_tensor(flat, part)
        for flat, part in zip(flats, parts):
            refs = [torch.empty_like(part) for _ in range(ctx.size)]
            dist.all_gather(refs, part, group=ctx.gloo)
            out.append(("all_gather_into_tensor coalesced", part.numel(), flat, torch.cat(refs)))
        t = x.clone()
        dist.reduce(t, dst=0)
        total = _reference(ctx, x, dist.ReduceOp.SUM)  # on every rank: a collective of the Gloo group
        out.append(("reduce", n, t, total if ctx.rank == 0 else x))
    dist.barrier()
    return out


def _compare(results):
    for rank_results in results:
        for what, n, mine, ref in rank_results:
            if isinstance(ref, tuple):  # a reference with its error bound, element by element
                ref, bound = ref
                assert bool(((mine.to(ref.dtype) - ref).abs() <= bound).all()), f"{what} n={n}"
            elif ref.is_complex() or ref.is_floating_point():
                torch.testing.assert_close(mine.to(ref.dtype), ref, rtol=1e-5, atol=1e-4, msg=f"{what} n={n}")
            else:
                assert torch.equal(mine.to(ref.dtype), ref), (what, n)
    # Bit-identical ranks: every rank holds the same all_reduce results.
    for what, n, mine, _ in results[0]:
        if what.startswith("all_reduce"):
            for other in results[1:]:
                theirs = next(row[2] for row in other if row[:2] == (what, n))
                assert torch.equal(mine, theirs), (what, n)


@pytest.mark.parametrize("size", [2, 3, 4])
def test_every_op_through_shared_memory_matches_gloo(size):
    world = World(size)
    try:
        assert all(s["used"] for s in world.run(_shared_memory)), "the ranks of one host did not share memory"
        first = world.run(_every_op, 1)
        _compare(first)
        # Repeatable: the same inputs give the same bits, run after run.
        again = world.run(_every_op, 1)
        for a, b in zip(first, again):
            for x, y in zip(a, b):
                assert torch.equal(x[2], y[2]), x[:2]
        used = world.run(_shared_memory)
        assert all(s["bytes"] > 0 for s in used), used
    finally:
        world.close()


def _sums_as_gloo(ctx):
    """qccl's sums and Gloo's on the same inputs: whether each pair is equal to the bit."""
    g = torch.Generator().manual_seed(7 + ctx.rank)
    equal = []
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for n in (1, 1000, 65539, 3_000_001):  # 3M floats: past 2 * ranks MiB at 2 and 3 ranks
            # Large values next to tiny ones: sums in another order round differently.
            x = (torch.randn(n, generator=g) * torch.where(torch.rand(n, generator=g) < 0.5, 1e3, 1e-3)).to(dtype)
            mine, ref = x.clone(), x.clone()
            dist.all_reduce(mine)
            dist.all_reduce(ref, group=ctx.gloo)
            equal.append((f"all_reduce {dtype} {n}", torch.equal(mine, ref)))
            mine, ref = x.clone(), x.clone()
            dist.reduce(mine, dst=ctx.size - 1)
            dist.reduce(ref, dst=ctx.size - 1, group=ctx.gloo)
            equal.append((f"reduce {dtype} {n}", ctx.rank != ctx.size - 1 or torch.equal(mine, ref)))
            shard, ref = torch.empty(n, dtype=dtype), torch.empty(n, dtype=dtype)
            whole = x.repeat(ctx.size) * (ctx.rank + 1)
            dist.reduce_scatter_tensor(shard, whole)
            dist.reduce_scatter_tensor(ref, whole, group=ctx.gloo)
            equal.append((f"reduce_scatter_tensor {dtype} {n}", torch.equal(shard, ref)))
    return [what for what, same in equal if not same]


@pytest.mark.parametrize("size", [2, 3, 4])
def test_sums_are_gloos_to_the_bit_at_any_world_size(size):
    """Shared memory reduces in the order of Gloo's ring (algo/gloo_ring_order.h), so
    float sums equal Gloo's bit for bit, as over sockets; a rank-order sum would not at 3
    and 4 ranks."""
    assert run_in_fresh_world(size, _sums_as_gloo) == [[]] * size


def _coalesced_as_over_sockets(ctx):
    """all_reduce_coalesced through shared memory and over sockets (force_network): the
    tensors are fused alike, so the sums must be the same bits."""
    sockets = dist.new_group(backend="qccl", pg_options=qccl.Options(force_network=True))
    g = torch.Generator().manual_seed(11 + ctx.rank)
    tensors = [torch.randn(n, generator=g) * 10.0 ** e for n, e in ((1000, 3), (70_001, -3), (5, 0), (30_000, 1))]
    here, there = [t.clone() for t in tensors], [t.clone() for t in tensors]
    dist.all_reduce_coalesced(here)
    dist.all_reduce_coalesced(there, group=sockets)
    return [torch.equal(a, b) for a, b in zip(here, there)]


def test_placement_never_changes_a_coalesced_sum():
    assert run_in_fresh_world(3, _coalesced_as_over_sockets) == [[True] * 4] * 3


def _mismatched_all_to_all(ctx):
    """Rank 0 sends rank 1 two elements where rank 1 expects three: without the check
    (QCCL_VERIFY=0) the channel's own size exchange must still refuse it on every rank."""
    sends, receives = ([1, 2], [1, 1]) if ctx.rank == 0 else ([1, 1], [3, 1])
    try:
        dist.all_to_all_single(torch.zeros(sum(receives)), torch.ones(sum(sends)), receives, sends)
        error = None
    except ValueError as e:
        error = str(e)
    t = torch.full((3,), float(ctx.rank + 1))
    dist.all_reduce(t)
    return error, t.tolist()


def test_all_to_all_sizes_that_disagree_raise_on_every_rank_without_the_check():
    results = run_in_fresh_world(2, _mismatched_all_to_all, env={"QCCL_VERIFY": "0"})
    for error, after in results:
        assert error and "qccl" in error and "rank 0 sends 8 bytes to rank 1, which expects 12" in error, error
        assert after == [3.0, 3.0, 3.0]


def _compressed_as_over_sockets(ctx):
    """Compressed calls through shared memory (their encoded bytes) and over sockets
    (force_network): the same algorithm on the same bytes, so the same bits."""
    results = []
    for force_network in (False, True):
        group = dist.new_group(backend="qccl", pg_options=qccl.Options(
            codec="int8", allgather_codec="int8", min_bytes=0, error_feedback=True, force_network=force_network))
        g = torch.Generator().manual_seed(23 + ctx.rank)
        before = qccl.stats(group)["shared_memory"]["bytes"]
        mine = []
        for n in (5, 4099, 700_001):  # 700k floats: encoded chunks over several 1 MiB rounds
            t = torch.randn(n, generator=g)
            dist.all_reduce(t, group=group)
            bucket = [torch.randn(n, generator=g), torch.randn(3 * n + 1, generator=g)]
            dist.all_reduce_coalesced(bucket, group=group)
            shard = torch.empty(n)
            dist.reduce_scatter_tensor(shard, torch.randn(n * ctx.size, generator=g), group=group)
            gathered = torch.empty(n * ctx.size)
            dist.all_gather_into_tensor(gathered, torch.randn(n, generator=g), group=group)
            mine += [t, *bucket, shard, gathered]
        stats = qccl.stats(group)
        assert stats["compressed_tensors"] > 0 and stats["reduce_scatter"]["compressed_tensors"] > 0, stats
        moved = stats["shared_memory"]["bytes"] - before
        # What this rank sent to its peers (each rank's part at least once through its slot).
        sent = stats["wire_bytes"] + stats["reduce_scatter"]["wire_bytes"] + stats["all_gather"]["wire_bytes"]
        results.append((mine, moved, sent // (ctx.size - 1)))
    (here, moved_here, sent), (there, moved_there, _) = results
    assert moved_here >= sent and moved_there == 0, (moved_here, sent, moved_there)
    return [torch.equal(a, b) for a, b in zip(here, there)]


@pytest.mark.parametrize("size", [2, 3])
def test_placement_never_changes_a_compressed_call(size):
    assert run_in_fresh_world(size, _compressed_as_over_sockets) == [[True] * 15] * size


def _p2p_exchange(ctx):
    """Every pair of ranks exchanges messages of every size class (inline, streamed past
    the 1 MiB ring) by send/recv, receives from any source and batch_isend_irecv; what
    each receive gets is checked against what its sender made (a seeded generator)."""
    def message(src, dst, n):
        return torch.randn(n, generator=torch.Generator().manual_seed(1000 * src + dst + n), dtype=torch.float64)

    before = qccl.stats()["shared_memory"]["bytes"]
    sizes = (1, 2000, 40_000, 700_001)  # the last is 5.6 MB
    bad = []
    for n in sizes:
        for peer in range(ctx.size):
            if peer == ctx.rank:
                continue
            ops = [dist.P2POp(dist.isend, message(ctx.rank, peer, n), peer),
                   dist.P2POp(dist.irecv, got := torch.empty(n, dtype=torch.float64), peer)]
            for work in dist.batch_isend_irecv(ops):
                work.wait()
            if not torch.equal(got, message(peer, ctx.rank, n)):
                bad.append(("batch", n, peer))
    # Ranks > 0 send rank 0 one message each; rank 0 takes them from any source.
    n = 300_000
    if ctx.rank == 0:
        for _ in range(ctx.size - 1):
            got = torch.empty(n, dtype=torch.float64)
            src = dist.recv(got)
            if not torch.equal(got, message(src, 0, n)):
                bad.append(("any source", n, src))
    else:
        dist.send(message(ctx.rank, 0, n), 0)
    dist.barrier()
    sent = sum(8 * n for n in sizes) * (ctx.size - 1) + (8 * 300_000 if ctx.rank else 0)
    return bad, qccl.stats()["shared_memory"]["bytes"] - before >= sent


@pytest.mark.parametrize("size", [2, 3])
def test_point_to_point_goes_through_shared_memory(size):
    assert run_in_fresh_world(size, _p2p_exchange) == [([], True)] * size


def _receives_waited_by_two_threads(ctx):
    """Rank 0 waits for two receives from rank 1 on two threads at once, while rank 1
    sends the second tag first: each waiter reads the mailbox for itself (p2p_engine.h,
    HostReader), so one may read the other's message; both must get their own."""
    import threading
    results = {}
    if ctx.rank == 0:
        def receive(tag):
            got = torch.zeros(64)
            dist.recv(got, 1, tag=tag)
            results[tag] = got[0].item()
        for _ in range(50):
            threads = [threading.Thread(target=receive, args=(tag,)) for tag in (1, 2)]
            for thread in threads:
                thread.start()
            dist.send(torch.ones(1), 1)  # go
            for thread in threads:
                thread.join(timeout=60)
            if results != {1: 1.0, 2: 2.0}:
                return results
            results.clear()
    else:
        for _ in range(50):
            dist.recv(torch.zeros(1), 0)
            dist.send(torch.full((64,), 2.0), 0, tag=2)
            dist.send(torch.full((64,), 1.0), 0, tag=1)
    return "ok"


def test_two_threads_waiting_for_one_peer_both_get_their_message():
    assert run_in_fresh_world(2, _receives_waited_by_two_threads) == ["ok", "ok"]


def test_force_network_turns_shared_memory_off():
    used = run_in_fresh_world(2, _shared_memory, env={"QCCL_FORCE_NETWORK": "1"})
    assert [s["used"] for s in used] == [False, False]


def _qccl_segments():
    return set(glob.glob("/dev/shm/qccl-*"))


def killed_rank(rank, size, port, report, op, n, victim_ready):
    init_loopback_rank(rank, size, port, 20)
    dist.all_reduce(torch.ones(4))
    if rank == size - 1:
        victim_ready.wait(60)
        os.kill(os.getpid(), signal.SIGKILL)  # dies without a word, while the others wait
    victim_ready.set()
    start = time.monotonic()
    try:
        if op == "recv":  # through the mailbox, from the rank that dies
            dist.recv(torch.zeros(n), size - 1)
        else:
            dist.all_reduce(torch.ones(n))
        report.put((rank, "no error", "", 0.0))
    except Exception as error:  # noqa: BLE001 - the error is the result
        report.put((rank, type(error).__name__, str(error), time.monotonic() - start))
    dist.destroy_process_group()


@pytest.mark.parametrize(
    "size,op,n",
    [(2, "all_reduce", 16), (3, "all_reduce", 16), (2, "all_reduce", 1 << 20), (3, "all_reduce", 1 << 20),
     (2, "recv", 16), (3, "recv", 1 << 20)],
    ids=["2ranks-small", "3ranks-small", "2ranks-4MiB", "3ranks-4MiB", "2ranks-recv-small", "3ranks-recv-4MiB"])
def test_a_rank_killed_mid_call_fails_the_others_within_the_timeout(size, op, n):
    before = _qccl_segments()
    ctx = mp.get_context("spawn")
    report, victim_ready = ctx.Queue(), ctx.Event()
    codes = spawn_ranks(size, killed_rank, (report, op, n, victim_ready))
    assert codes == [0] * (size - 1) + [-signal.SIGKILL], codes
    for _ in range(size - 1):
        rank, kind, message, seconds = report.get(timeout=10)
        assert kind == "DistBackendError", (rank, kind, message)
        assert message.startswith("qccl: "), message
        assert seconds < 20, (rank, seconds, message)  # the group timeout is 20 s
    assert _qccl_segments() <= before, _qccl_segments() - before


def sigkilled_rank(rank, size, port, ready):
    init_loopback_rank(rank, size, port, 20)
    dist.all_reduce(torch.ones(1 << 18))
    ready.put(rank)
    time.sleep(60)  # killed by the test before this ends


def test_nothing_is_left_in_dev_shm_when_every_rank_is_sigkilled():
    before = _qccl_segments()
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=sigkilled_rank, args=(r, 3, port, ready)) for r in range(3)]
    for p in procs:
        p.start()
    for _ in range(3):
        ready.get(timeout=120)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        p.join(30)
    assert _qccl_segments() <= before, _qccl_segments() - before



def fallback_rank(rank, size, port, report):
    init_loopback_rank(rank, size, port, 20)
    t = torch.full((1000,), float(rank + 1))
    dist.all_reduce(t)
    report.put((rank, qccl.stats()["shared_memory"]["used"], t.tolist() == [3.0] * 1000))
    dist.destroy_process_group()


# Run inside a mount namespace whose /dev/shm is a 1 MiB tmpfs (a container's small
# /dev/shm): the ranks cannot create their 2 MiB segments.
SMALL_DEV_SHM = """
import multiprocessing as mp, sys
sys.path.insert(0, ".")
from test_one_host import fallback_rank
from world import spawn_ranks
if __name__ == "__main__":
    report = mp.get_context("spawn").Queue()
    codes = spawn_ranks(2, fallback_rank, (report,))
    print("RESULT", codes, sorted(report.get(timeout=10) for _ in range(2)))
"""


def test_a_small_dev_shm_falls_back_to_sockets_with_one_warning():
    import subprocess
    import sys
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespaces here (unshare -m: {probe.stderr.decode().strip()})")
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c",
         f"mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {sys.executable} -c '{SMALL_DEV_SHM}'"],
        capture_output=True, text=True, timeout=300, cwd=os.path.dirname(os.path.abspath(__file__)))
    assert "RESULT [0, 0] [(0, False, True), (1, False, True)]" in done.stdout, done.stdout + done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if "could not use shared memory" in line]
    assert len(warnings) == 1, done.stderr[-3000:]
    assert "bytes free, a shared-memory segment needs" in warnings[0], warnings[0]
