"""LocalSGD: each replica steps on its own; every `sync_every` steps the parameters are
averaged across the group."""

import torch
import torch.distributed as dist

from ._sync import FlatBuffer, check_plans_match, plan_digest


class LocalSGD:
    """Wraps `optimizer`: call step() (and zero_grad()) on this instead.

        local = qccl.algorithms.LocalSGD(model, torch.optim.AdamW(model.parameters()), sync_every=50)
        ...
        loss.backward()
        local.step()

    Every `sync_every` steps all trainable parameters are averaged through `group` (the
    default group when None) in one all_reduce of one float32 buffer, compressed with the
    group's codec when it has one (and with its error feedback, since the buffer is the
    same at every sync). qccl's all-reduce gives every replica the same bits, so after a
    sync the replicas' parameters are identical. The optimizers' own state (AdamW's
    moments) stays local, as in local SGD.
    """

    def __init__(self, model, optimizer, sync_every: int, group=None):
        if not isinstance(sync_every, int) or sync_every < 1:
            raise ValueError(f"qccl: LocalSGD needs sync_every >= 1, got {sync_every!r}")
        self.optimizer = optimizer
        self.sync_every = sync_every
        self.group = group
        self._parameters = [p for p in model.parameters() if p.requires_grad]
        self._buffer = FlatBuffer(self._parameters)
        self._steps = 0
        self._checked = False

    def step(self, closure=None):
        loss = self.optimizer.step(closure)
        self._steps += 1
        if self._steps % self.sync_every == 0:
            self.sync()
        return loss

    def zero_grad(self, set_to_none: bool = True):
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def sync(self):
        """Averages the parameters across the group now."""
        if not self._checked:
            digest = plan_digest("LocalSGD", self._parameters, sync_every=self.sync_every)
            check_plans_match(digest, f"LocalSGD(sync_every={self.sync_every})", self.group)
            self._checked = True
        for parameter, view in self._buffer.views():
            view.copy_(parameter)
        dist.all_reduce(self._buffer.flat, op=dist.ReduceOp.AVG, group=self.group)
        for parameter, view in self._buffer.views():
            parameter.copy_(view)

    def state_dict(self) -> dict:
        return {"steps": self._steps, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._steps = int(state["steps"])
        self.optimizer.load_state_dict(state["optimizer"])
