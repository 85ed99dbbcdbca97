"""The Transformers recipe of docs/guide/frameworks.md, run by test_huggingface.py under torchrun: create the
group first, then the Trainer; prints a digest of the trained parameters and how many
all_reduces qccl carried."""

import hashlib
import sys

import torch
import torch.distributed as dist
from torch import nn

backend, output_dir = sys.argv[1], sys.argv[2]
dist.init_process_group(backend)  # before the Trainer, which then uses this group

from transformers import Trainer, TrainingArguments  # noqa: E402

import qccl  # noqa: E402


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


generator = torch.Generator().manual_seed(0)
inputs, labels = torch.randn(512, 16, generator=generator), torch.randint(0, 4, (512,), generator=generator)
dataset = [{"x": inputs[i], "labels": labels[i]} for i in range(len(inputs))]

torch.manual_seed(0)
model = Classifier()
arguments = TrainingArguments(
    output_dir=output_dir, per_device_train_batch_size=16, max_steps=10, learning_rate=1e-2, use_cpu=True,
    report_to=[], save_strategy="no", logging_strategy="no", seed=0, dataloader_num_workers=0,
    disable_tqdm=True,
)
Trainer(model=model, args=arguments, train_dataset=dataset).train()
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
calls = qccl.stats()["calls"] if backend == "qccl" else 0
if dist.get_rank() == 0:
    print(f"parameters {hashlib.sha256(flat.numpy().tobytes()).hexdigest()[:16]} qccl all_reduces {calls}", flush=True)
dist.destroy_process_group()
