"""DiLoCo and Streaming DiLoCo: rare outer steps on the averaged change of the parameters."""

import torch
import torch.distributed as dist

from ._sync import FlatBuffer, check_plans_match, plan_digest


def split_into_fragments(parameters, fragments: int):
    """Consecutive runs of `parameters` with about equal element counts, one per fragment;
    every parameter in exactly one."""
    total = sum(p.numel() for p in parameters)
    runs, current, filled = [], [], 0
    for index, parameter in enumerate(parameters):
        current.append(parameter)
        filled += parameter.numel()
        left_parameters = len(parameters) - index - 1
        left_fragments = fragments - len(runs) - 1
        full = filled >= total * (len(runs) + 1) / fragments
        if left_fragments > 0 and (full or left_parameters == left_fragments):
            runs.append(current)
            current = []
    runs.append(current)
    return runs


class _Pending:
    """A fragment's all-reduce on the wire: its result is applied at step `due`."""

    def __init__(self, work, due, posted):
        self.work = work
        self.due = due
        self.posted = posted  # the fragment's parameters when the sync was posted


class DiLoCo:
    """Wraps the inner optimizer: call step() (and zero_grad()) on this instead.

        inner = torch.optim.AdamW(model.parameters(), lr=1e-3)
        outer = torch.optim.SGD(model.parameters(), lr=0.7, momentum=0.9, nesterov=True)
        diloco = qccl.algorithms.DiLoCo(model, inner, outer, sync_every=50, group=wan_group)

    Every `sync_every` inner steps, each replica's outer gradient (the synced parameters
    minus its parameters now) is averaged through `group` (compressed with its codec;
    int4 with error feedback is the usual choice), and `outer_optimizer` (built on the
    model's parameters) steps from the synced parameters with it. The synced parameters
    are bit-identical on every replica after every outer step.

    `fragments` > 1 splits the parameters into that many consecutive runs of about equal
    size, synced on a staggered schedule (fragment f at steps f * sync_every / fragments
    + k * sync_every): each parameter once per `sync_every` steps, a fraction of the bytes
    at a time. `sync_delay` > 0 posts a fragment's all-reduce and applies its result that
    many inner steps later, so communication overlaps compute; the fragment then takes
    the outer result plus the replica's own progress during those steps, so replicas hold
    identical parameters again only where sync_delay is 0.
    """

    def __init__(self, model, inner_optimizer, outer_optimizer, sync_every: int, fragments: int = 1,
                 sync_delay: int = 0, group=None):
        self._parameters = [p for p in model.parameters() if p.requires_grad]
        if not isinstance(sync_every, int) or sync_every < 1:
            raise ValueError(f"qccl: DiLoCo needs sync_every >= 1, got {sync_every!r}")
        if not isinstance(fragments, int) or not 1 <= fragments <= min(sync_every, len(self._parameters)):
            raise ValueError(
                f"qccl: DiLoCo needs 1 <= fragments <= min(sync_every, trainable parameters) = "
                f"{min(sync_every, len(self._parameters))}, got {fragments!r}"
            )
        if not isinstance(sync_delay, int) or not 0 <= sync_delay < sync_every:
            raise ValueError(f"qccl: DiLoCo needs 0 <= sync_delay < sync_every ({sync_every}), got {sync_delay!r}")
        self.inner_optimizer = inner_optimizer
        self.outer_optimizer = outer_optimizer
        self.sync_every = sync_every
        self.sync_delay = sync_delay
        self.group = group
        self.fragments = split_into_fragments(self._parameters, fragments)
        self._offsets = [f * sync_every // fragments for f in range(fragments)]
        self._synced = [[p.detach().clone() for p in fragment] for fragment in self.fragments]
        self._buffers = [FlatBuffer(fragment) for fragment in self.fragments]
        self._pending = {}
        self._steps = 0
        self._checked = False

    def step(self, closure=None):
        loss = self.inner_optimizer.step(closure)
        self._steps += 1
        for f in sorted(self._pending):
            if self._pending[f].due == self._steps:
                self._apply(f)
        for f in self.syncs_at(self._steps):
            self._post(f)
        return loss

    def zero_grad(self, set_to_none: bool = True):
        self.inner_optimizer.zero_grad(set_to_none=set_to_none)

    def syncs_at(self, step: int) -> list[int]:
        """The fragments whose all-reduce is posted after inner step `step` (1-based)."""
        return [f for f, offset in enumerate(self._offsets) if step % self.sync_every == offset]

    @torch.no_grad()
    def _post(self, f):
        if not self._checked:
            settings = dict(sync_every=self.sync_every, fragments=len(self.fragments), sync_delay=self.sync_delay)
            description = "DiLoCo(" + ", ".join(f"{k}={v}" for k, v in settings.items()) + ")"
            check_plans_match(plan_digest("DiLoCo", self._parameters, **settings), description, self.group)
            self._checked = True
        for (parameter, view), synced in zip(self._buffers[f].views(), self._synced[f]):
            torch.sub(synced, parameter, out=view)  # the outer gradient: how far this replica moved, negated
        work = dist.all_reduce(self._buffers[f].flat, op=dist.ReduceOp.AVG, group=self.group,
                               async_op=self.sync_delay > 0)
        posted = [p.detach().clone() for p in self.fragments[f]] if self.sync_delay > 0 else None
        self._pending[f] = _Pending(work, self._steps + self.sync_delay, posted)
        if self.sync_delay == 0:
            self._apply(f)

    @torch.no_grad()
    def _apply(self, f):
        pending = self._pending.pop(f)
        if pending.work is not None:  # an async all-reduce (sync_delay > 0) not yet waited for
            pending.work.wait()
        fragment = self.fragments[f]
        progress = [p - posted for p, posted in zip(fragment, pending.posted)] if pending.posted else None
        # The outer step: from the synced parameters (the same on every replica), with the
        # averaged outer gradient, on this fragment only (the optimizer skips parameters
        # whose grad is None).
        saved = [p.grad for p in self._parameters]
        for p in self._parameters:
            p.grad = None
        for (parameter, view), synced in zip(self._buffers[f].views(), self._synced[f]):
            parameter.copy_(synced)
            parameter.grad = view.to(parameter.dtype)
        self.outer_optimizer.step()
        for parameter, synced in zip(fragment, self._synced[f]):
            synced.copy_(parameter)
        for p, grad in zip(self._parameters, saved):
            p.grad = grad
        if progress is not None:
            for parameter, moved in zip(fragment, progress):
                parameter.add_(moved)

    def state_dict(self) -> dict:
        """The step count, the synced parameters, the outer and inner optimizers' state, and
        syncs still on the wire (waited for, so a resumed run applies them at the same step).
        qccl's own compression state is saved with qccl.state_dict(group)."""
        pending = {}
        for f, p in self._pending.items():
            if p.work is not None:
                p.work.wait()
                p.work = None
            pending[f] = {"due": p.due, "posted": p.posted, "average": self._buffers[f].flat.clone()}
        return {
            "steps": self._steps,
            "synced": [[t.clone() for t in fragment] for fragment in self._synced],
            "outer_optimizer": self.outer_optimizer.state_dict(),
            "inner_optimizer": self.inner_optimizer.state_dict(),
            "pending": pending,
        }

    def load_state_dict(self, state: dict) -> None:
        self._steps = int(state["steps"])
        for mine, saved in zip(self._synced, state["synced"]):
            for t, s in zip(mine, saved):
                t.copy_(s)
        self.outer_optimizer.load_state_dict(state["outer_optimizer"])
        self.inner_optimizer.load_state_dict(state["inner_optimizer"])
        self._pending = {}
        for f, p in state["pending"].items():
            self._buffers[f].flat.copy_(p["average"])
            self._pending[f] = _Pending(None, p["due"], p["posted"])
