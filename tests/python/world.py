"""Multi-process test worlds: real rank processes on this machine, kept alive across tests.

A World starts `size` processes (spawned, so each has a fresh interpreter), each with a
qccl default process group and a Gloo group over the same ranks for reference results.
`world.run(fn, *args)` runs the module-level function `fn(ctx, *args)` on every rank and
returns the per-rank results, or raises with every failing rank's traceback. Every wait
is bounded, so a hang becomes a test failure, not a stuck CI run.
"""

import dataclasses
import datetime
import multiprocessing as mp
import os
import queue
import socket
import subprocess
import sys
import time
import traceback

RUN_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class RankContext:
    rank: int
    size: int
    gloo: object  # a Gloo process group over all ranks, for reference results


def _rank_main(rank, size, port, backend, timeout_s, env, tasks, results):
    os.environ.update(env)
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # 2 to 4 ranks share 2 cores
    try:
        dist.init_process_group(
            backend,
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        ctx = RankContext(rank, size, dist.new_group(backend="gloo"))
        results.put(("ready", rank, None))
    except BaseException:  # noqa: BLE001 - reported to the test
        results.put(("error", rank, traceback.format_exc()))
        return
    while True:
        task = tasks.get()
        if task is None:
            break
        fn, args = task
        groups_before = set(dist.distributed_c10d._world.pg_map)
        try:
            value = fn(ctx, *args)
            # The groups a test made die with it: every group keeps Gloo's threads (32,
            # and an event loop that wakes up now and then), so a world that ran many tests
            # would otherwise hold thousands of threads and slow every later test down.
            for group in [g for g in dist.distributed_c10d._world.pg_map if g not in groups_before]:
                dist.destroy_process_group(group)
            results.put(("ok", rank, value))
        except BaseException:  # noqa: BLE001 - reported to the test
            results.put(("error", rank, traceback.format_exc()))
    dist.destroy_process_group()


class WorldError(AssertionError):
    pass


class World:
    def __init__(self, size, backend="qccl", timeout_s=60, env=None):
        self.size = size
        ctx = mp.get_context("spawn")
        self._results = ctx.Queue()
        self._tasks = [ctx.Queue() for _ in range(size)]
        port = free_port()
        self._procs = [
            ctx.Process(
                target=_rank_main,
                args=(r, size, port, backend, timeout_s, env or {}, self._tasks[r], self._results),
                daemon=True,
            )
            for r in range(size)
        ]
        for p in self._procs:
            p.start()
        self.broken = False
        self._collect(RUN_TIMEOUT_S)  # every rank reports "ready"

    def _collect(self, timeout_s):
        results, errors = {}, {}
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout_s)
        while len(results) + len(errors) < self.size:
            left = (deadline - datetime.datetime.now()).total_seconds()
            try:
                kind, rank, value = self._results.get(timeout=max(0.1, min(left, 1.0)))
            except queue.Empty:
                dead = [r for r, p in enumerate(self._procs) if not p.is_alive()]
                if dead or left <= 0:
                    self.broken = True
                    missing = sorted(set(range(self.size)) - set(results) - set(errors))
                    why = f"ranks {dead} died" if dead else f"timed out after {timeout_s}s"
                    raise WorldError(f"{why}; no answer from ranks {missing}; errors: {errors}")
                continue
            if kind == "error":
                errors[rank] = value
            else:
                results[rank] = value
        if errors:
            self.broken = True
            text = "\n".join(f"--- rank {r} ---\n{tb}" for r, tb in sorted(errors.items()))
            raise WorldError(f"{len(errors)} rank(s) failed:\n{text}")
        return [results[r] for r in range(self.size)]

    def run(self, fn, *args, timeout_s=RUN_TIMEOUT_S):
        for q in self._tasks:
            q.put((fn, args))
        return self._collect(timeout_s)

    def close(self):
        for q in self._tasks:
            try:
                q.put(None)
            except (ValueError, OSError):
                pass
        for p in self._procs:
            p.join(timeout=10 if not self.broken else 1)
            if p.is_alive():
                p.kill()
                p.join()


def spawn_ranks(size, target, args=(), timeout_s=120):
    """Runs `target(rank, size, port, *args)` once in `size` fresh processes; returns their
    exit codes. For tests where ranks die on purpose."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, size, port, *args)) for r in range(size)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout_s)
    codes = []
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
            codes.append("hung")
        else:
            codes.append(p.exitcode)
    return codes


def init_loopback_rank(rank, size, port, timeout_s):
    """For spawn_ranks targets: one thread, and a qccl default group on loopback."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "qccl",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def report_outcome(report, rank, action):
    """Runs `action` (usually expected to raise) and puts (rank, error type name or None,
    message, seconds it took) on the `report` queue."""
    start = time.monotonic()
    try:
        action()
        report.put((rank, None, "no error", time.monotonic() - start))
    except Exception as error:  # noqa: BLE001 - the error is the result
        report.put((rank, type(error).__name__, str(error), time.monotonic() - start))


def run_in_fresh_world(size, fn, *args, env=None):
    """Runs `fn` on a World of its own (for settings a shared world cannot have), then
    closes it; returns the ranks' results."""
    world = World(size, env=env)
    try:
        return world.run(fn, *args)
    finally:
        world.close()


def run_torchrun(script, *args, cwd, nproc=2, env=None):
    """Runs `script` under torchrun with `nproc` ranks, as a user would; returns its output
    (stdout), or fails the test with the end of both outputs."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-port", str(free_port()), str(script), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout
