"""One torchft replica group (of one rank) whose cross-replica gradient sync runs on qccl.

Run a lighthouse, then one process per replica group (each one rank here):

    python -c "from torchft.coordination import LighthouseServer as L; import time; \
l = L(bind='[::]:29510', min_replicas=2); print(l.address()); time.sleep(1e9)"
    QCCL_CODEC=int8 python examples/train_torchft.py --replica-id 0 --lighthouse http://HOST:29510
    QCCL_CODEC=int8 python examples/train_torchft.py --replica-id 1 --lighthouse http://HOST:29510

Kill a replica and start it again: it rejoins the next quorum and heals from its peer
(torchft sends it the live model and optimizer state), and training goes on. The codec of
the cross-replica sync comes from QCCL_* / qccl.Options as for any qccl group. At the end
each replica prints its step count and a digest of its parameters (equal across replicas)
and, with --save, writes the parameters.
"""

import argparse
import hashlib
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torchft import DistributedDataParallel, Manager, Optimizer

import qccl
from qccl.torchft import ProcessGroupQCCL


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replica-id", type=int, required=True)
    p.add_argument("--lighthouse", required=True, help="the lighthouse's address (http://host:port)")
    p.add_argument("--steps", type=int, default=30, help="committed steps to train")
    p.add_argument("--replicas", type=int, default=2, help="replica groups every step waits for")
    p.add_argument("--fail-at", type=int, default=-1, help="exit abruptly once this step is committed (tests)")
    p.add_argument("--save", help="write the final parameters to this file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    store = dist.TCPStore("localhost", 0, is_master=True, wait_for_workers=False)  # this replica group's own

    torch.manual_seed(0)  # the same initial model everywhere; a healed replica gets its peer's anyway
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)

    manager = Manager(
        pg=ProcessGroupQCCL(timeout=timedelta(seconds=30)),
        min_replica_size=args.replicas,
        load_state_dict=lambda state: (model.load_state_dict(state["model"]), optimizer.load_state_dict(state["optim"])),
        state_dict=lambda: {"model": model.state_dict(), "optim": optimizer.state_dict()},
        replica_id=f"replica{args.replica_id}",
        store_addr="localhost",
        store_port=store.port,
        rank=0,
        world_size=1,
        lighthouse_addr=args.lighthouse,
        timeout=timedelta(seconds=30),
    )
    ddp = DistributedDataParallel(manager, model)
    wrapped = Optimizer(manager, optimizer)
    data = torch.Generator().manual_seed(1000 + args.replica_id)
    while manager.current_step() < args.steps:
        x = torch.randn(32, 16, generator=data)
        y = (x[:, :4].argmax(dim=1) + x[:, 4:8].argmax(dim=1)) % 4
        wrapped.zero_grad()
        loss = nn.functional.cross_entropy(ddp(x), y)
        loss.backward()
        wrapped.step()
        if manager.current_step() == args.fail_at:
            print(f"replica {args.replica_id}: failing on purpose at step {args.fail_at}", flush=True)
            os._exit(1)

    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    digest = hashlib.sha256(flat.numpy().tobytes()).hexdigest()[:16]
    counters = qccl.stats(manager._pg)  # the group of the last quorum
    print(f"replica {args.replica_id}: step {manager.current_step()}, loss {loss.item():.4f}, "
          f"parameters {digest}, codec {counters['settings']['codec']}, "
          f"compressed tensors since the last quorum {counters['compressed_tensors']}", flush=True)
    if args.save:
        torch.save(flat, args.save)
    manager.shutdown(wait=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
