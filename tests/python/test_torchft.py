"""qccl.torchft.ProcessGroupQCCL under torchft's own process-group API (configure on a
store address, again on a new quorum, every collective torchft uses against Gloo's result,
abort from another thread waking a blocked call, errored() reporting it), and the
example's torchft Manager with two replica groups, one killed and healed. Skipped where
torchft is not installed."""

import datetime
import os
import pathlib
import re
import subprocess
import sys
import threading

import pytest
import torch
import torch.distributed as dist

pytest.importorskip("torchft", reason="torchft is not installed (pip install torchft): the integration is optional")

TIMEOUT = datetime.timedelta(seconds=20)


def _address(ctx, quorum):
    """A torchft store address (host:port/prefix) on the world's own TCPStore."""
    store = dist.distributed_c10d._get_default_store()
    while hasattr(store, "underlying_store"):
        store = store.underlying_store
    return f"localhost:{store.port}/torchft/quorum{quorum}"


def rank_torchft(ctx):
    import qccl
    from qccl.torchft import ProcessGroupQCCL

    pg = ProcessGroupQCCL(timeout=TIMEOUT, options=qccl.Options(codec="int8", min_bytes=0))
    results = {}
    for quorum in (1, 2):  # a new quorum: configure() again
        pg.configure(_address(ctx, quorum), f"replica{ctx.rank}", ctx.rank, ctx.size)
        x = torch.randn(4096, generator=torch.Generator().manual_seed(ctx.rank + quorum))
        exact = x.double()
        dist.all_reduce(exact, group=ctx.gloo)
        got = x.clone()
        pg.allreduce([got], dist.AllreduceOptions()).wait()
        bound = (ctx.size + 1) * exact.abs().max().item() / 127
        results[f"allreduce{quorum}"] = 0 < (got.double() - exact).abs().max().item() <= bound

    t = torch.arange(6, dtype=torch.float32) + ctx.rank
    reference = t.clone()
    dist.broadcast(reference, 0, group=ctx.gloo)
    pg.broadcast([t], dist.BroadcastOptions()).wait()
    results["broadcast"] = torch.equal(t, reference)

    out = torch.empty(3)
    shards = torch.arange(3 * ctx.size, dtype=torch.float32) * (ctx.rank + 1)
    expected = torch.empty(3)
    dist.reduce_scatter_tensor(expected, shards.clone(), group=ctx.gloo)
    pg.reduce_scatter_tensor_coalesced([out], [shards], dist.ReduceScatterOptions()).wait()
    # torchft's Gloo group refuses this; qccl compresses it (int8: one quantization of
    # each rank's contribution, at most half a step of its block's scale).
    largest = (3 * ctx.size - 1) * ctx.size
    results["reduce_scatter"] = 0 < (out - expected).abs().max().item() <= ctx.size * largest / 127 / 2 + 1e-4
    results["stats"] = qccl.stats(pg)["compressed_tensors"]
    results["name"] = pg.getBackendName()

    # A call rank 1 never joins (it waits, connected, until rank 0 is done): abort() from
    # another thread wakes rank 0 at once.
    store = dist.distributed_c10d._get_default_store()
    if ctx.rank != 0:
        store.wait(["torchft abort tested"], datetime.timedelta(seconds=60))
    else:
        timer = threading.Timer(1.0, pg.abort)
        timer.start()
        try:
            pg.allreduce([torch.ones(3)], dist.AllreduceOptions()).wait()
            results["aborted"] = "no error"
        except RuntimeError as error:
            results["aborted"] = str(error)
        timer.join()
        results["errored"] = pg.errored() is not None
        store.set("torchft abort tested", "1")
    return results


def test_torchft_process_group(world2):
    for rank, r in enumerate(world2.run(rank_torchft)):
        assert r["allreduce1"] and r["allreduce2"], r
        assert r["broadcast"] and r["reduce_scatter"], r
        assert r["stats"] >= 1 and r["name"] == "torchft-qccl", r
        if rank == 0:
            assert r["aborted"].startswith("qccl:") and "abort" in r["aborted"], r
            assert r["errored"], r


EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "train_torchft.py"


def test_manager_heals_a_killed_replica_and_syncs_compressed(tmp_path):
    """Two replica groups sync int8 gradients through qccl; replica 1 dies at step 4 and is
    started again: it heals from replica 0, and both end with the same parameters."""
    from torchft.coordination import LighthouseServer

    lighthouse = LighthouseServer(bind="[::]:0", min_replicas=2)
    env = {**os.environ, "QCCL_CODEC": "int8", "QCCL_MIN_BYTES": "0"}

    def replica(i, *extra):
        command = [sys.executable, str(EXAMPLE), "--replica-id", str(i), "--lighthouse", lighthouse.address(),
                   "--steps", "12", "--save", str(tmp_path / f"replica{i}.pt"), *extra]
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    try:
        first = replica(0)
        doomed = replica(1, "--fail-at", "4")
        doomed_output, _ = doomed.communicate(timeout=180)
        assert doomed.returncode == 1 and "failing on purpose at step 4" in doomed_output, doomed_output[-3000:]
        second = replica(1)
        outputs = [first.communicate(timeout=180)[0], second.communicate(timeout=180)[0]]
    finally:
        lighthouse.shutdown()
    for process, output in zip((first, second), outputs):
        assert process.returncode == 0, output[-3000:]
        match = re.search(r"step 12, .*codec int8, compressed tensors since the last quorum (\d+)", output)
        assert match and int(match.group(1)) > 0, output[-3000:]
    assert "healing is required" in outputs[1], outputs[1][-3000:]
    assert torch.equal(torch.load(tmp_path / "replica0.pt"), torch.load(tmp_path / "replica1.pt"))
