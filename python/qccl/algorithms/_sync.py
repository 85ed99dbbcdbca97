"""What LocalSGD and DiLoCo share: the cross-replica check of their plan, and the flat
buffer a list of tensors is all-reduced in."""

import hashlib

import torch
import torch.distributed as dist


def plan_digest(name: str, parameters, **settings) -> int:
    """A number that equal plans share: the algorithm, its settings and the parameters'
    shapes and dtypes."""
    text = repr((name, sorted(settings.items()), [(tuple(p.shape), str(p.dtype)) for p in parameters]))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "little")


def check_plans_match(digest: int, description: str, group) -> None:
    """Raises ValueError on every replica unless all have the same plan. It is the first
    collective a replica makes, so replicas whose plans differ (a different sync_every
    syncs at other steps) still meet in it, and fail there instead of hanging later."""
    mine = torch.tensor([digest, -digest], dtype=torch.int64)
    dist.all_reduce(mine, op=dist.ReduceOp.MAX, group=group)
    if mine[0].item() != digest or -mine[1].item() != digest:
        rank = dist.get_rank(group)
        raise ValueError(
            f"qccl: the replicas' synchronization plans differ (this is replica {rank}: {description}); "
            "every replica must use the same sync_every, fragments, sync_delay and model"
        )


class FlatBuffer:
    """A float32 buffer that holds a list of tensors end to end. The same buffer is
    all-reduced at every sync, so qccl's error feedback finds its residual again."""

    def __init__(self, tensors):
        self.tensors = list(tensors)
        total = sum(t.numel() for t in self.tensors)
        device = self.tensors[0].device if self.tensors else torch.device("cpu")
        self.flat = torch.zeros(total, dtype=torch.float32, device=device)

    def views(self):
        offset = 0
        for t in self.tensors:
            yield t, self.flat[offset:offset + t.numel()].view(t.shape)
            offset += t.numel()
