"""qccl.algorithms.ParameterServer / ParameterServerClient: asynchronous training on
point-to-point messages. Convergence is checked against float64 least squares; a dead
worker and bad messages against what the server reports and what the worker raises."""

import datetime
import multiprocessing as mp

import pytest
import torch
import torch.distributed as dist

import qccl
from qccl.algorithms import ParameterServer, ParameterServerClient
from qccl.algorithms.parameter_server import REFUSED, REPLY_TAG, REQUEST_TAG, shard_bounds
from conftest import get_world
from world import init_loopback_rank, spawn_ranks

FEATURES, SAMPLES, BATCH = 512, 4096, 128  # 2 shards of 256 elements: one int8 block each


def _problem():
    """A least-squares problem every rank builds alike, and its float64 solution."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, FEATURES, generator=g, dtype=torch.float64)
    y = x @ torch.randn(FEATURES, 1, generator=g, dtype=torch.float64) + 0.01 * torch.randn(
        SAMPLES, 1, generator=g, dtype=torch.float64)
    return x.float(), y.float(), torch.linalg.lstsq(x, y).solution.T


def _model():
    torch.manual_seed(1)
    return torch.nn.Linear(FEATURES, 1, bias=False)


def _train(client, model, x, y, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(0, SAMPLES, (BATCH,), generator=g)
        loss = ((model(x[rows]) - y[rows]) ** 2).mean()
        client.zero_grad()
        loss.backward()
        client.step()


def least_squares_rank(ctx, num_servers, p2p_codec, replies_through_group, steps):
    """Pushes through a group with `p2p_codec`; replies exact, or through that group too."""
    group = dist.new_group(backend="qccl", pg_options=qccl.Options(p2p_codec=p2p_codec))
    reply_group = group if replies_through_group else None
    x, y, solution = _problem()
    model = _model()
    if ctx.rank < num_servers:
        server = ParameterServer(model, lambda p: torch.optim.SGD(p, lr=0.05), num_servers,
                                 max_staleness=ctx.size, worker_timeout=60, group=group, reply_group=reply_group)
        report = server.serve()
        return {"role": "server", "version": report.version, "stale": report.stale,
                "dropped": report.dropped, "errors": report.errors}
    client = ParameterServerClient(model, num_servers, group=group, reply_group=reply_group)
    _train(client, model, x, y, steps, seed=ctx.rank)
    client.close()
    error = (model.weight.detach().double() - solution).norm() / solution.norm()
    return {"role": "worker", "error": error.item(), "applied": client.applied, "stale": client.stale,
            "pushed": client.pushed_bytes}


@pytest.mark.parametrize("num_servers, p2p_codec, replies_through_group, bound", [
    (1, "none", False, 1e-3),  # 1 server, 3 workers, exact
    (2, "int8", False, 1e-3),  # 2 servers, 2 workers: int8 pushes, exact parameters back
    (2, "int8", True, 3e-2),   # parameters back in int8 too: the workers hold rounded weights
])
def test_workers_converge_to_the_least_squares_solution(num_servers, p2p_codec, replies_through_group, bound):
    steps = 300
    results = get_world(4).run(least_squares_rank, num_servers, p2p_codec, replies_through_group, steps)
    servers = [r for r in results if r["role"] == "server"]
    workers = [r for r in results if r["role"] == "worker"]
    for worker in workers:
        assert worker["error"] < bound, workers
        # Every push was either applied or refused as stale, on every server.
        assert worker["applied"] + worker["stale"] == steps * num_servers
    for server in servers:
        assert not server["dropped"] and not server["errors"]
        assert server["version"] + server["stale"] == steps * len(workers)
    assert sum(w["applied"] for w in workers) == sum(s["version"] for s in servers)
    exact = steps * 4 * FEATURES
    if p2p_codec == "int8":  # about a quarter of float32's bytes
        assert all(w["pushed"] < 0.3 * exact for w in workers), workers
    else:
        assert all(w["pushed"] == exact for w in workers), workers


def dead_worker_rank(rank, size, port, report):
    """Server 0 and workers 1 and 2; worker 2 dies after 5 steps."""
    init_loopback_rank(rank, size, port, timeout_s=60)
    x, y, solution = _problem()
    model = _model()
    if rank == 0:
        server = ParameterServer(model, lambda p: torch.optim.SGD(p, lr=0.05), 1, max_staleness=2,
                                 worker_timeout=datetime.timedelta(seconds=2))
        result = server.serve()
        report.put(("server", result.dropped, result.version))
    else:
        client = ParameterServerClient(model, 1)
        _train(client, model, x, y, 5 if rank == 2 else 300, seed=rank)
        if rank == 2:
            import os
            os._exit(3)  # no close(): the server only sees silence
        client.close()
        error = (model.weight.detach().double() - solution).norm() / solution.norm()
        report.put(("worker", error.item(), client.applied))
    dist.destroy_process_group()


def test_a_dead_worker_is_dropped_after_the_timeout_and_the_others_go_on():
    report = mp.get_context("spawn").Queue()
    codes = spawn_ranks(3, dead_worker_rank, (report,))
    results = dict((kind, rest) for kind, *rest in (report.get(timeout=10) for _ in range(2)))
    assert codes == [0, 0, 3], codes
    dropped, version = results["server"]
    assert list(dropped) == [2] and "silent for" in dropped[2], dropped
    error, applied = results["worker"]
    assert error < 1e-2 and applied > 250, results
    assert version >= applied


def bad_messages_rank(ctx):
    """Server 0; rank 1 sends a request of an unknown kind by hand; rank 2 builds a
    bigger model; rank 3 is a well-behaved worker."""
    x, y, _ = _problem()
    model = _model()
    if ctx.rank == 0:
        report = ParameterServer(model, lambda p: torch.optim.SGD(p, lr=0.05), 1, max_staleness=4).serve()
        return report.errors, report.dropped, report.version
    if ctx.rank == 1:
        dist.send(torch.tensor([7, 0, FEATURES], dtype=torch.int64), dst=0, tag=REQUEST_TAG)
        header = torch.zeros(3, dtype=torch.int64)
        dist.recv(header, src=0, tag=REPLY_TAG)
        reason = torch.zeros(header[2].item(), dtype=torch.uint8)
        dist.recv(reason, src=0, tag=REPLY_TAG)
        return header[0].item(), bytes(reason.tolist()).decode()
    if ctx.rank == 2:
        try:
            ParameterServerClient(torch.nn.Linear(FEATURES + 1, 1, bias=False), 1)
        except ValueError as error:
            return str(error)
        return "no error"
    client = ParameterServerClient(model, 1)
    _train(client, model, x, y, 20, seed=3)
    client.close()
    return client.applied


def test_bad_messages_get_clear_errors_and_the_server_goes_on():
    world = get_world(4)
    (errors, dropped, version), (status, reason), refused, applied = world.run(bad_messages_rank)
    assert status == REFUSED and "unknown kind 7" in reason and reason.startswith("qccl parameter server")
    assert "expects 513 elements in shard 0, which holds 512" in refused and "worker 2" in refused
    assert sorted(dropped) == [1, 2] and len(errors) == 2
    assert applied == version == 20, "the well-behaved worker was served throughout"
    # The group is still usable: an all-reduce equals Gloo's.
    assert world.run(_sum_of_ranks) == [6.0] * 4


def _sum_of_ranks(ctx):
    t = torch.tensor([float(ctx.rank)])
    dist.all_reduce(t)
    return t.item()


def wrong_setup_rank(ctx):
    model = _model()
    messages = []
    attempts = [
        lambda: ParameterServerClient(model, 1) if ctx.rank == 0 else ParameterServer(
            model, torch.optim.SGD, 1, max_staleness=1),  # the wrong role for the rank
        lambda: ParameterServer(model, torch.optim.SGD, 2, max_staleness=1),  # no worker left
        lambda: ParameterServer(model, torch.optim.SGD, 1, max_staleness=-1),
        lambda: ParameterServer(model, torch.optim.SGD, 1, max_staleness=1, worker_timeout=0),
        lambda: ParameterServer(torch.nn.ReLU(), torch.optim.SGD, 1, max_staleness=1),
    ]
    for attempt in attempts:
        try:
            attempt()
            messages.append("no error")
        except ValueError as error:
            messages.append(str(error))
    return messages


def test_wrong_setups_are_refused_before_anything_is_sent(world2):
    server, worker = world2.run(wrong_setup_rank)
    assert "group rank 0 is a server" in server[0] and "group rank 1 is a worker" in worker[0]
    assert all("between 1 and the group size minus one (1)" in m[1] for m in (server, worker))
    assert "max_staleness must be >= 0" in server[2]
    assert "timeout must be positive" in server[3]
    assert "has no parameters" in server[4]


def test_shards_are_consecutive_and_cover_everything():
    for total, servers in [(10, 3), (2, 2), (1024, 1), (7, 4)]:
        bounds = shard_bounds(total, servers)
        assert bounds[0][0] == 0 and bounds[-1][1] == total
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        sizes = [end - start for start, end in bounds]
        assert max(sizes) - min(sizes) <= 1
