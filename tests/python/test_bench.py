"""The benchmark tools as a user runs them: `python -m qccl.bench` on a tiny
configuration, and benchmarks/netlab around it when this machine allows namespaces."""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.perf

ROOT = pathlib.Path(__file__).resolve().parents[2]
NETLAB = ROOT / "benchmarks" / "netlab"

TABLE_HEADER = ["size", "count", "type", "redop", "backend", "time(us)", "algbw(GB/s)", "busbw(GB/s)"]


def run(command, cwd, timeout=300):
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def bench(*args):
    return [sys.executable, "-m", "qccl.bench", "--iters", "2", "--rounds", "1", "--warmup", "1", *args]


def test_bench_cli_writes_table_csv_json_and_plots(tmp_path):
    out = tmp_path / "out"
    result = run(bench(
        "--ranks", "2", "--sizes", "4K,256K", "--collectives", "allreduce,allgather,reduce_scatter,sendrecv",
        "--backends", "gloo,qccl:none,qccl:int8", "--out", str(out),
    ), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for title in TABLE_HEADER:
        assert title in result.stdout
    assert "[  8/8]" in result.stderr, "progress lines"

    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    measured = {(r["collective"], int(r["size"]), r["backend"]) for r in rows}
    expected = {(c, s, b) for c in ("allreduce", "allgather", "reduce_scatter", "sendrecv") for s in (4096, 262144)
                for b in ("gloo", "qccl:none", "qccl:int8")}
    assert measured == expected, "every compressible collective with every codec"
    for r in rows:
        assert float(r["time_us"]) > 0 and float(r["busbw_GBps"]) > 0
        error = float(r["rel_error"])
        # Collectives compress from min_bytes (64 KiB) on; every send/recv is >= one block.
        compressed = r["backend"] == "qccl:int8" and (r["collective"] == "sendrecv" or int(r["size"]) >= 65536)
        if compressed:
            assert 1e-3 < error < 2e-2, f"int8 error against float64: {r}"
            assert float(r["wire_bytes_per_rank"]) < int(r["size"]) / 3, "int8 sends ~4x fewer bytes"
        elif r["collective"] in ("allgather", "sendrecv"):
            assert error == 0.0, f"data movement must be exact: {r}"
        else:
            assert error < 1e-6, f"exact reduction: {r}"

    with open(out / "results.json") as f:
        report = json.load(f)
    assert report["metadata"]["ranks"] == 2 and "loopback" in report["metadata"]["network"]
    assert len(report["rows"]) == len(rows)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    for collective in ("allreduce", "allgather", "reduce_scatter", "sendrecv"):
        assert (out / f"{collective}.png").stat().st_size > 1000


def test_bench_cli_rejects_unknown_names(tmp_path):
    result = run(bench("--backends", "gloo,qccl:int3"), cwd=tmp_path)
    assert result.returncode == 2 and "int3" in result.stderr
    result = run(bench("--collectives", "allreduce,gossip"), cwd=tmp_path)
    assert result.returncode == 2 and "gossip" in result.stderr
    result = run(bench("--sizes", "4K,lots"), cwd=tmp_path)
    assert result.returncode == 2 and "not a size: 'lots'" in result.stderr


def netlab_unavailable():
    if os.geteuid() != 0:
        return "netlab needs root"
    if not (shutil.which("ip") and shutil.which("tc")):
        return "netlab needs ip and tc (iproute2)"
    probe = subprocess.run(["ip", "netns", "add", f"qccl-probe-{os.getpid()}"], capture_output=True)
    if probe.returncode != 0:
        return f"network namespaces unavailable: {probe.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", f"qccl-probe-{os.getpid()}"], check=True)
    return None


def lab_leftovers():
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [line for line in (namespaces + links).splitlines() if "qlab" in line or "qlv" in line or "qlb" in line]


@pytest.fixture
def netlab():
    reason = netlab_unavailable()
    if reason:
        pytest.skip(f"netlab not exercised: {reason}")
    yield NETLAB
    assert lab_leftovers() == [], "netlab must tear down its namespaces and links"


def test_netlab_runs_the_bench_on_shaped_links(netlab, tmp_path):
    """At 100 Mbit/s Gloo's 4 MiB allreduce cannot beat the wire bound, and int8 sends
    about 4x fewer bytes: both show the ranks really talk through the shaped links."""
    out = tmp_path / "out"
    result = run([
        str(netlab), "--ranks", "2", "--rate", "100mbit", "--",
        *bench("--sizes", "4M", "--collectives", "allreduce", "--backends", "gloo,qccl:int8", "--out", str(out)),
    ], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "links shaped to 100mbit" in result.stdout and "measured" in result.stdout
    with open(out / "results.json") as f:
        report = json.load(f)
    assert report["metadata"]["force_network"] is False  # the lab's nodes are namespaces: other hosts
    assert report["metadata"]["link_rate_bits_per_s"] == 100e6
    gloo, int8 = sorted(report["rows"], key=lambda r: r["backend"])
    assert gloo["backend"] == "gloo" and gloo["bound_us"] == pytest.approx(4 * 2**20 * 8 / 100e6 * 1e6)
    assert gloo["time_us"] > 0.9 * gloo["bound_us"], "faster than the link allows: not shaped"
    assert int8["time_us"] < gloo["time_us"], "int8 must win where the link is the bottleneck"


def test_netlab_reports_a_failed_rank_and_cleans_up(netlab, tmp_path):
    result = run([
        str(netlab), "--ranks", "3", "--rate", "100mbit", "--", sys.executable, "-c",
        "import os, sys; print('rank says hi'); sys.exit(7 if os.environ['RANK'] == '2' else 0)",
    ], cwd=tmp_path)
    assert result.returncode == 7, result.stdout + result.stderr
    assert "rank 2 failed (exit 7)" in result.stderr and "[rank 2] rank says hi" in result.stderr


def delay_unavailable():
    if not shutil.which("cc"):
        return "netlab --delay needs a C compiler (cc) for its delay line"
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
    except OSError as e:
        return f"netlab --delay needs TUN devices: {e}"
    return None


# Run by every rank inside the lab: rank 0 times 10 one-byte round trips to each other
# rank over plain TCP (not the lab's own check) and prints the median per peer.
PING_PONG = """
import os, socket, statistics, time
rank, world, port = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), 29700
if rank == 0:
    with socket.create_server(("0.0.0.0", port), backlog=world) as server:
        peers = [server.accept()[0] for _ in range(world - 1)]
    for conn in peers:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = conn.recv(1)[0]
        times = []
        for _ in range(10):
            start = time.perf_counter()
            conn.sendall(b"p")
            assert conn.recv(1) == b"p"
            times.append(time.perf_counter() - start)
        print(f"rank {peer} rtt_ms {statistics.median(times) * 1e3:.3f} delay {os.environ['QCCL_LAB_DELAY']}")
        conn.close()
else:
    for attempt in range(400):  # until rank 0 listens
        try:
            conn = socket.create_connection((os.environ["MASTER_ADDR"], port))
            break
        except OSError:
            time.sleep(0.05)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sendall(bytes([rank]))
    while ping := conn.recv(1):
        conn.sendall(ping)
"""


def test_netlab_delay_gives_every_rank_pair_twice_the_delay_as_rtt(netlab, tmp_path):
    """--delay 10 must hold packets 10 ms each way between any two ranks: a TCP ping-pong
    from rank 0 to each of 3 other ranks, run as the lab's command, sees an RTT of 20 ms."""
    reason = delay_unavailable()
    if reason:
        pytest.skip(reason)
    result = run([
        str(netlab), "--ranks", "4", "--rate", "100mbit", "--delay", "10", "--check-seconds", "0.3", "--",
        sys.executable, "-c", PING_PONG,
    ], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    measured = {}
    for line in result.stdout.splitlines():
        if line.startswith("rank "):
            _, peer, _, rtt, _, delay = line.split()
            measured[int(peer)] = float(rtt)
            assert delay == "10", "the command is told the delay"
    assert sorted(measured) == [1, 2, 3], result.stdout
    for peer, rtt in measured.items():
        assert rtt == pytest.approx(20.0, rel=0.2), f"RTT to rank {peer}: {rtt} ms, want 2 x 10 ms"
    assert "10 ms one-way delay" in result.stdout and "RTT" in result.stdout, "the lab's own check"


def test_train_bench_compares_configurations(tmp_path):
    """A tiny model through benchmarks/train_bench.py: every configuration trains the same
    model from the same weights, so uncompressed Gloo and qccl reach the same loss."""
    result = run([
        sys.executable, str(ROOT / "benchmarks" / "train_bench.py"), "--ranks", "2",
        "--configs", "gloo,gloo+powersgd4,qccl:none,qccl:int8", "--steps", "3", "--warmup", "1",
        "--width", "32", "--layers", "1", "--heads", "2", "--context", "16",
        "--json", str(tmp_path / "train.json"),
    ], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "train.json") as f:
        results = {r["config"]: r for r in json.load(f)["results"]}
    assert list(results) == ["gloo", "gloo+powersgd4", "qccl:none", "qccl:int8"]
    assert results["qccl:none"]["loss"] == results["gloo"]["loss"]
    for r in results.values():
        assert r["samples_per_s"] > 0 and 0 < r["compute_s"]
        assert r["config"] in result.stdout


def test_fusion_bench_runs(tmp_path):
    result = run([
        sys.executable, str(ROOT / "benchmarks" / "fusion_bench.py"), "--ranks", "2",
        "--tensors", "20", "--rounds", "1",
    ], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for way in ("gloo separate", "gloo fused", "qccl separate", "qccl fused"):
        assert way in result.stdout


def test_pipeline_bench_compares_configurations(tmp_path):
    """A tiny pipeline through benchmarks/pipeline_bench.py: Gloo and qccl without a codec
    train the same model to the same loss; int8 activations to a nearby one."""
    result = run([
        sys.executable, str(ROOT / "benchmarks" / "pipeline_bench.py"), "--ranks", "2",
        "--configs", "gloo,qccl:none,qccl:int8", "--steps", "2", "--warmup", "1",
        "--width", "32", "--heads", "2", "--context", "16", "--batch-size", "8",
        "--json", str(tmp_path / "pipeline.json"),
    ], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "pipeline.json") as f:
        results = {r["config"]: r for r in json.load(f)["results"]}
    assert list(results) == ["gloo", "qccl:none", "qccl:int8"]
    assert results["qccl:none"]["loss"] == results["gloo"]["loss"]
    assert abs(results["qccl:int8"]["loss"] - results["gloo"]["loss"]) < 0.1
    assert all(r["samples_per_s"] > 0 for r in results.values())


# Every rank makes the same groups: the whole world (two nodes), each node's ranks, and
# ranks 0 and 2 (one of each node). It checks each group's sum, and reports with how many
# ranks each group shares memory (the world: its node's, for hierarchical node stages);
# rank 0 prints its own (the lab shows rank 0's output). Then an int8 all-reduce of the
# world, hierarchical by the hosts (ranks_per_node unset): node stages through shared
# memory, the rest over the lab's links, the same bits as with every stage over sockets.
HOSTS_IN_THE_LAB = """
import os, torch, torch.distributed as dist, qccl
dist.init_process_group("qccl")
rank = dist.get_rank()
groups = {"world": dist.group.WORLD, "node0": dist.new_group([0, 1]), "node1": dist.new_group([2, 3]),
          "across": dist.new_group([0, 2])}
used = {}
for name, group in groups.items():
    if rank in dist.get_process_group_ranks(group):
        t = torch.ones(1000)
        dist.all_reduce(t, group=group)
        assert t[0] == dist.get_world_size(group), (name, t[0])
        used[name] = qccl.stats(group)["shared_memory"]["ranks"]
print("USED", rank, sorted(used.items()), flush=True)
mine = {0: {"world": 2, "node0": 2, "across": 0}, 1: {"world": 2, "node0": 2},
        2: {"world": 2, "node1": 2, "across": 0}, 3: {"world": 2, "node1": 2}}[rank]
assert used == mine, (rank, used)
x = torch.randn(300_000, generator=torch.Generator().manual_seed(rank))
sums = []
for force_network in (False, True):
    group = dist.new_group(pg_options=qccl.Options(codec="int8", min_bytes=0, force_network=force_network))
    before = qccl.stats(group)["shared_memory"]["bytes"]
    t = x.clone()
    dist.all_reduce(t, group=group)
    stats = qccl.stats(group)
    assert stats["settings"]["ranks_per_node"] == "2", stats["settings"]
    assert 0 < stats["node_wire_bytes"] < stats["wire_bytes"], stats  # some in the node, some across
    moved = stats["shared_memory"]["bytes"] - before
    assert (moved >= stats["node_wire_bytes"]) if not force_network else not stats["shared_memory"]["used"], stats
    sums.append(t)
assert torch.equal(*sums), "node stages through shared memory changed the bits"
print("HIERARCHICAL", rank, "ok", flush=True)
dist.destroy_process_group()
"""


def test_the_lab_s_nodes_are_different_hosts_and_a_node_s_ranks_share_memory(netlab, tmp_path):
    """Same-host detection per group (issue 28): ranks in different network namespaces
    (the lab's nodes) never share memory; a group of one node's ranks does, and so do the
    node stages of a group across both nodes, whose nodes come from the hosts."""
    result = run([str(netlab), "--ranks", "4", "--ranks-per-node", "2", "--rate", "1gbit", "--",
                  sys.executable, "-c", HOSTS_IN_THE_LAB], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "USED 0 [('across', 0), ('node0', 2), ('world', 2)]" in result.stdout, result.stdout
    assert "HIERARCHICAL 0 ok" in result.stdout, result.stdout


def test_recovery_bench_heals_every_way(tmp_path):
    """benchmarks/recovery_bench.py end to end at 2 ranks, one repeat of each way of
    healing: every survivor sees the failure and finishes an all_reduce on the healed
    group (the script asserts its value), and each row is written."""
    methods = ["qccl reconfigure", "qccl shrink", "qccl fresh group", "gloo fresh group"]
    result = run([sys.executable, str(ROOT / "benchmarks" / "recovery_bench.py"), "--ranks", "2", "--repeats", "1",
                  "--methods", ",".join(methods), "--json", str(tmp_path / "recovery.json")], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "recovery.json") as f:
        rows = json.load(f)
    assert [r["method"] for r in rows] == methods
    for r in rows:
        assert 0 < r["detected s"] <= r["recovered s"], r
