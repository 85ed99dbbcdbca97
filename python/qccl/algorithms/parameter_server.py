"""Asynchronous parameter-server training on point-to-point messages.

The group's first `num_servers` ranks are servers, the others workers. The model's
parameters, flattened to one float32 vector, are cut into `num_servers` consecutive
shards; server s holds shard s and its optimizer. A worker pulls every shard, computes
gradients on its own batch, and pushes each shard's gradient to its server, which
applies it at once and answers with its current shard: workers never wait for each
other, only for the servers' answers.

Pushes go through `group`, so its p2p codec (QCCL_P2P_CODEC) compresses the gradients.
Parameters go back bit for bit (as their raw bits, which no codec touches) unless a
`reply_group` is given: then as float32 through it, so its codec applies. A server takes
a push made on parameters at most `max_staleness` of its updates old and answers older
ones with fresh parameters only. It drops a worker that has been silent for
`worker_timeout` seconds, or whose messages cannot be delivered, and goes on serving the
others; a dropped worker that speaks again is told so and raises.

The wire protocol (group ranks, user tags 0x5153_0001..3):
    worker -> server  REQUEST  int64 [kind, version, shard elements]
                      GRADIENT float32 shard gradient, after a PUSH request
    server -> worker  REPLY    int64 [status, version, reason bytes]
                      then the shard (float32, or its bits as int32), or for a
                      refusal the reason in UTF-8
"""

import dataclasses
import datetime
import time

import torch
import torch.distributed as dist

from .. import compression
from .._extension import load

REQUEST_TAG, GRADIENT_TAG, REPLY_TAG = 0x5153_0001, 0x5153_0002, 0x5153_0003

PUSH, PULL, DONE = 1, 2, 3
APPLIED, STALE, SENT, DROPPED, REFUSED = 0, 1, 2, 3, 4


def shard_bounds(total: int, num_servers: int) -> list:
    """[start, end) of each server's shard: consecutive, sizes differing by at most one."""
    base, extra = divmod(total, num_servers)
    bounds, start = [], 0
    for s in range(num_servers):
        end = start + base + (1 if s < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def _seconds(value) -> float:
    seconds = value.total_seconds() if isinstance(value, datetime.timedelta) else float(value)
    if seconds <= 0:
        raise ValueError(f"qccl parameter server: a timeout must be positive, got {value!r}")
    return seconds


def _layout(group, num_servers: int, role: str):
    """(this rank in the group, the group's size), after checking the role fits."""
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    if not 1 <= num_servers < size:
        raise ValueError(
            f"qccl parameter server: num_servers must be between 1 and the group size minus one "
            f"({size - 1}), so that at least one rank is a worker; got {num_servers}"
        )
    if (rank < num_servers) != (role == "server"):
        raise ValueError(
            f"qccl parameter server: group rank {rank} is a {'server' if rank < num_servers else 'worker'} "
            f"(ranks 0..{num_servers - 1} serve, the others work), but was made a {role}"
        )
    return rank, size


def _p2p_codec(group, numel: int):
    """(codec, block) that `group`'s point-to-point sends encode a float32 tensor of
    `numel` elements with, or None when it travels exactly (not a qccl group, no codec,
    or under one block)."""
    try:
        settings = compression.stats(group)["settings"]
    except ValueError:
        return None
    codec, block = settings["p2p_codec"], int(settings["block"])
    return None if codec == "none" or numel < block else (codec, block)


def _payload_bytes(group, numel: int) -> int:
    codec = _p2p_codec(group, numel)
    return load().codec_encoded_bytes(*codec, numel) if codec else 4 * numel


def _as_sent(shard, exact: bool):
    """The shard as a reply carries it: its bits as int32 when replies are exact, which
    no codec touches; else the float32 values."""
    return shard.view(torch.int32) if exact else shard


def _flat_parameters(model) -> list:
    parameters = list(model.parameters())
    if not parameters:
        raise ValueError("qccl parameter server: the model has no parameters")
    return parameters


@dataclasses.dataclass
class ServerReport:
    """What a server did, returned by ParameterServer.serve()."""

    version: int = 0        # updates applied (the shard's version)
    stale: int = 0          # pushes refused for being more than max_staleness updates old
    pulls: int = 0
    dropped: dict = dataclasses.field(default_factory=dict)  # worker rank -> why
    errors: list = dataclasses.field(default_factory=list)   # bad messages, in arrival order


class ParameterServer:
    """Holds one shard of `model`'s parameters and serves workers until all are done or
    dropped. `make_optimizer(parameters)` builds the optimizer that applies pushes."""

    def __init__(self, model, make_optimizer, num_servers: int, *, max_staleness: int,
                 worker_timeout=60.0, group=None, reply_group=None):
        self.group = group or dist.group.WORLD
        self.reply_group = reply_group or self.group
        self._exact_replies = reply_group is None
        self.rank, size = _layout(self.group, num_servers, "server")
        if max_staleness < 0:
            raise ValueError(f"qccl parameter server: max_staleness must be >= 0, got {max_staleness}")
        self.max_staleness = max_staleness
        self.worker_timeout = _seconds(worker_timeout)
        flat = torch.nn.utils.parameters_to_vector(_flat_parameters(model)).detach().float()
        start, end = shard_bounds(flat.numel(), num_servers)[self.rank]
        self.shard = torch.nn.Parameter(flat[start:end].clone())
        self.optimizer = make_optimizer([self.shard])
        self.report = ServerReport()
        self._num_servers = num_servers
        self._workers = set(range(num_servers, size))  # still served
        self._heard = {}                                # worker -> last message time
        self._replies = []                              # (worker, Work) still being sent

    def serve(self) -> ServerReport:
        start = time.monotonic()
        self._heard = {w: start for w in self._workers}
        poll = datetime.timedelta(seconds=min(1.0, self.worker_timeout / 4))
        while self._workers:
            request = torch.zeros(3, dtype=torch.int64)
            work = dist.irecv(request, group=self.group, tag=REQUEST_TAG)
            try:
                work.wait(timeout=poll)
            except dist.DistBackendError:  # nothing came: a timeout, or a sender died mid-message
                self._drop_silent()
                continue
            self._handle(work._source_rank(), *request.tolist())
            self._drop_silent()
            self._reap_replies(block=False)
        self._reap_replies(block=True)
        return self.report

    # --- one request ----------------------------------------------------------------

    def _handle(self, src: int, kind: int, version: int, numel: int) -> None:
        if src < self._num_servers:
            self._refuse(src, f"rank {src} sent a request, but it is a server", kind)
            return
        if src in self.report.dropped:
            self._drain_gradient(src, kind)
            if kind != DONE:
                self._reply(src, DROPPED)
            return
        self._heard[src] = time.monotonic()
        if kind == DONE:
            self._workers.discard(src)
            return
        if kind not in (PUSH, PULL):
            self._refuse(src, f"worker {src} sent a request of unknown kind {kind}", kind)
        elif numel != self.shard.numel():
            self._refuse(src, f"worker {src} expects {numel} elements in shard {self.rank}, which holds "
                              f"{self.shard.numel()}: servers and workers must build the same model and "
                              "use the same num_servers", kind)
        elif not 0 <= version <= self.report.version:
            self._refuse(src, f"worker {src} claims version {version} of shard {self.rank}, which is at "
                              f"{self.report.version}", kind)
        elif kind == PULL:
            self.report.pulls += 1
            self._reply(src, SENT)
        else:
            self._push(src, version)

    def _push(self, src: int, version: int) -> None:
        gradient = torch.empty_like(self.shard, requires_grad=False)
        try:
            dist.irecv(gradient, group=self.group, group_src=src, tag=GRADIENT_TAG).wait(
                timeout=datetime.timedelta(seconds=self.worker_timeout))
        except dist.DistBackendError as error:
            self._drop(src, f"its gradient did not arrive: {error}")
            return
        if self.report.version - version > self.max_staleness:
            self.report.stale += 1
            self._reply(src, STALE)
            return
        self.shard.grad = gradient
        self.optimizer.step()
        self.shard.grad = None
        self.report.version += 1
        self._reply(src, APPLIED)

    def _reply(self, worker: int, status: int, reason: str = "") -> None:
        reason_bytes = torch.tensor(list(reason.encode()), dtype=torch.uint8)
        header = torch.tensor([status, self.report.version, reason_bytes.numel()], dtype=torch.int64)
        try:
            works = [dist.isend(header, group=self.reply_group, group_dst=worker, tag=REPLY_TAG)]
            if status in (APPLIED, STALE, SENT):
                # A copy: the shard changes with the next push while this one is on the wire.
                shard = _as_sent(self.shard.detach().clone(), self._exact_replies)
                works.append(dist.isend(shard, group=self.reply_group, group_dst=worker, tag=REPLY_TAG))
            elif reason:
                works.append(dist.isend(reason_bytes, group=self.reply_group, group_dst=worker, tag=REPLY_TAG))
        except dist.DistBackendError as error:
            self._drop(worker, f"the answer could not be sent: {error}")
            return
        self._replies.extend((worker, w) for w in works)

    def _refuse(self, src: int, why: str, kind: int) -> None:
        """A bad message: recorded, its sender dropped (when a worker) and told why."""
        why = f"qccl parameter server (rank {self.rank}): {why}"
        self.report.errors.append(why)
        self._drain_gradient(src, kind)
        self._drop(src, why)
        self._reply(src, REFUSED, why)

    def _drain_gradient(self, src: int, kind: int) -> None:
        """Takes the gradient a PUSH request announced, so that it does not wait in this
        rank's memory for a receive that never comes. A gradient of another size is
        rejected (qccl tells the sender); both are ignored here."""
        if kind != PUSH:
            return
        try:
            dist.irecv(torch.empty_like(self.shard, requires_grad=False), group=self.group,
                       group_src=src, tag=GRADIENT_TAG).wait(timeout=datetime.timedelta(seconds=self.worker_timeout))
        except (ValueError, dist.DistBackendError):
            pass

    # --- workers that went away -------------------------------------------------------

    def _drop(self, worker: int, why: str) -> None:
        if worker in self._workers:
            self._workers.discard(worker)
            self.report.dropped[worker] = why

    def _drop_silent(self) -> None:
        now = time.monotonic()
        for worker in sorted(self._workers):
            silent = now - self._heard[worker]
            if silent > self.worker_timeout:
                self._drop(worker, f"silent for {silent:.1f} s (worker_timeout {self.worker_timeout:g} s)")

    def _reap_replies(self, block: bool) -> None:
        pending = []
        for worker, work in self._replies:
            if not block and not work.is_completed():
                pending.append((worker, work))
                continue
            try:
                work.wait()
            except dist.DistBackendError as error:
                self._drop(worker, f"the answer could not be sent: {error}")
        self._replies = pending


class ParameterServerClient:
    """A worker's side: `step()` takes the place of the optimizer's step. It pushes the
    gradients of `model`'s parameters and loads the parameters the servers answer with.
    The constructor pulls the servers' parameters into the model."""

    def __init__(self, model, num_servers: int, *, group=None, reply_group=None):
        self.group = group or dist.group.WORLD
        self.reply_group = reply_group or self.group
        self._exact_replies = reply_group is None
        self.rank, _ = _layout(self.group, num_servers, "worker")
        self.parameters = _flat_parameters(model)
        total = sum(p.numel() for p in self.parameters)
        self.bounds = shard_bounds(total, num_servers)
        self.versions = [0] * num_servers
        self.applied = self.stale = 0  # pushes the servers applied, and refused as stale
        # Payload bytes this worker sent (gradients) and received (parameters).
        self.pushed_bytes = self.pulled_bytes = 0
        self._push_bytes = sum(_payload_bytes(self.group, end - start) for start, end in self.bounds)
        self._pull_bytes = sum(4 * (end - start) if self._exact_replies else _payload_bytes(reply_group, end - start)
                               for start, end in self.bounds)
        self._flat = torch.zeros(total, dtype=torch.float32)
        self._exchange(PULL)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def step(self) -> None:
        """Pushes the gradients (a parameter without one pushes zeros) and loads fresh
        parameters from every server."""
        with torch.no_grad():
            gradient = torch.cat([
                (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).float()
                for p in self.parameters
            ])
        self._exchange(PUSH, gradient)
        self.pushed_bytes += self._push_bytes

    def close(self) -> None:
        """Tells every server this worker is done; it stops waiting for it."""
        for server in range(len(self.bounds)):
            dist.send(torch.tensor([DONE, 0, 0], dtype=torch.int64), group=self.group,
                      group_dst=server, tag=REQUEST_TAG)

    def _exchange(self, kind: int, gradient=None) -> None:
        # Every request goes out before any answer is awaited: the servers work in parallel.
        sends = []
        for server, (start, end) in enumerate(self.bounds):
            header = torch.tensor([kind, self.versions[server], end - start], dtype=torch.int64)
            sends.append(dist.isend(header, group=self.group, group_dst=server, tag=REQUEST_TAG))
            if kind == PUSH:
                sends.append(dist.isend(gradient[start:end], group=self.group, group_dst=server, tag=GRADIENT_TAG))
        for server, (start, end) in enumerate(self.bounds):
            self._receive(server, self._flat[start:end])
        for work in sends:
            work.wait()
        self.pulled_bytes += self._pull_bytes
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(self._flat, self.parameters)

    def _receive(self, server: int, shard) -> None:
        header = torch.zeros(3, dtype=torch.int64)
        dist.recv(header, group=self.reply_group, group_src=server, tag=REPLY_TAG)
        status, version, reason_bytes = header.tolist()
        if status == DROPPED:
            raise RuntimeError(
                f"qccl parameter server: server {server} dropped worker {self.rank} (it was silent longer "
                "than the server's worker_timeout, or an answer to it failed)")
        if status == REFUSED:
            reason = torch.zeros(reason_bytes, dtype=torch.uint8)
            dist.recv(reason, group=self.reply_group, group_src=server, tag=REPLY_TAG)
            raise ValueError(f"{bytes(reason.tolist()).decode()} (refused worker {self.rank})")
        dist.recv(_as_sent(shard, self._exact_replies), group=self.reply_group, group_src=server, tag=REPLY_TAG)
        self.versions[server] = version
        if status == APPLIED:
            self.applied += 1
        elif status == STALE:
            self.stale += 1
