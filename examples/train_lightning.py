"""Lightning's DDP on qccl: the only change is the strategy's process_group_backend.

    torchrun --nproc-per-node 2 examples/train_lightning.py --backend qccl
    QCCL_CODEC=int8 torchrun --nproc-per-node 2 examples/train_lightning.py --backend qccl
    torchrun --nproc-per-node 2 examples/train_lightning.py --backend gloo   # the reference

(Lightning can also start the ranks itself: python examples/train_lightning.py.) Rank 0
prints the final loss and a digest of the parameters: with the same seed, qccl without a
codec and Gloo print the same digest.
"""

import argparse
import hashlib
import sys

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import qccl  # noqa: F401  (registers "qccl"; the torch.backends entry point does it too)


class Classifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 8))

    def training_step(self, batch, _):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.last_loss = loss.detach()
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


def dataset(n=4096):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 32, generator=g)
    y = (x[:, :8].argmax(dim=1) + (x[:, 8:16].sum(dim=1) > 0).long()) % 8
    return TensorDataset(x, y)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="qccl")
    p.add_argument("--devices", type=int, default=2, help="ranks, when Lightning starts them itself")
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args(argv)

    L.seed_everything(0, verbose=False)
    model = Classifier()
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, strategy=DDPStrategy(process_group_backend=args.backend),
        max_steps=args.steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(dataset(), batch_size=32))
    if trainer.global_rank == 0:
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        digest = hashlib.sha256(flat.numpy().tobytes()).hexdigest()[:16]
        print(f"backend {args.backend}, {trainer.world_size} ranks, {trainer.global_step} steps, "
              f"final loss {model.last_loss.item():.4f}, parameters {digest}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
