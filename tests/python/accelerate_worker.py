"""The Accelerate recipe of docs/guide/frameworks.md, run by test_huggingface.py under torchrun: create the
group first, then Accelerator(); prints a digest of the trained parameters and how many
all_reduces qccl carried."""

import hashlib
import sys

import torch
import torch.distributed as dist
from torch import nn

backend = sys.argv[1]
dist.init_process_group(backend)  # before Accelerate, which then uses this group

from accelerate import Accelerator  # noqa: E402

import qccl  # noqa: E402

accelerator = Accelerator(cpu=True)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
model, optimizer = accelerator.prepare(model, optimizer)
data = torch.Generator().manual_seed(100 + dist.get_rank())
for _ in range(10):
    x, y = torch.randn(32, 16, generator=data), torch.randint(0, 4, (32,), generator=data)
    optimizer.zero_grad()
    accelerator.backward(nn.functional.cross_entropy(model(x), y))
    optimizer.step()
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
calls = qccl.stats()["calls"] if backend == "qccl" else 0
if dist.get_rank() == 0:
    print(f"{type(model).__name__} parameters {hashlib.sha256(flat.numpy().tobytes()).hexdigest()[:16]} "
          f"qccl all_reduces {calls}", flush=True)
dist.destroy_process_group()
