"""Asynchronous parameter-server training of the example's transformer.

Ranks 0..S-1 (--servers) hold the parameters, cut into S shards, and apply the gradients
that the other ranks, the workers, push; workers never wait for each other. The model and
the data are char_lm.py's; a worker's optimizer step is ParameterServerClient.step().
QCCL_P2P_CODEC compresses the pushed gradients; the parameters come back exactly unless
--reply-codec names a codec for them.

    QCCL_P2P_CODEC=int8 torchrun --nproc-per-node 3 examples/parameter_server.py --servers 1
    torchrun --nproc-per-node 2 examples/train_diloco.py --algorithm ddp --backend gloo  # the reference

A worker that dies or hangs is dropped by the servers after --worker-timeout seconds and
the others go on (--kill-worker-after N makes the last worker exit after N steps to
show it). torchrun stops every rank of a node when one of its processes fails, so for
that, start each rank on its own (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).

Server 0 prints the loss (the workers' mean over their last 10 steps), tokens/s over all
workers and the bytes each worker sent (gradients) and received (parameters) per token.
"""

import argparse
import datetime
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

import qccl
from char_lm import CharTransformer, add_data_arguments, batches, load_corpus, use_a_share_of_the_cores
from qccl.algorithms import ParameterServer, ParameterServerClient


SUMMARY_TAG = 7  # a worker's numbers, for server 0's summary
SUMMARY = ("loss", "seconds", "tokens", "sent", "received", "applied", "stale")


def work(args, model, rank):
    """A worker: train on its own batches, then tell server 0 how it went."""
    client = ParameterServerClient(model, args.servers, reply_group=args.reply_group)
    data = batches(load_corpus(), rank, dist.get_world_size(), args.batch_size, args.context, args.seed)
    start, recent = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        if args.kill_worker_after and rank == dist.get_world_size() - 1 and step > args.kill_worker_after:
            print(f"worker {rank}: exits after {args.kill_worker_after} steps (--kill-worker-after)", flush=True)
            os._exit(1)
        tokens, targets = next(data)
        loss = F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())
        client.zero_grad()
        loss.backward()
        client.step()
        recent = (recent + [loss.item()])[-10:]
    summary = [sum(recent) / len(recent), time.perf_counter() - start, args.steps * args.batch_size * args.context,
               client.pushed_bytes, client.pulled_bytes, client.applied, client.stale]
    dist.send(torch.tensor(summary, dtype=torch.float64), dst=0, tag=SUMMARY_TAG)  # server 0 reads it at the end
    client.close()


def serve(args, model, rank):
    server = ParameterServer(
        model, lambda parameters: torch.optim.AdamW(parameters, lr=args.lr), args.servers,
        max_staleness=args.max_staleness, worker_timeout=args.worker_timeout, reply_group=args.reply_group)
    report = server.serve()
    print(f"server {rank}: {report.version} updates applied, {report.stale} stale pushes refused, "
          f"dropped {report.dropped or 'none'}, {len(report.errors)} bad messages", flush=True)
    if rank != 0:
        return
    workers = [w for w in range(args.servers, dist.get_world_size()) if w not in report.dropped]
    summaries = []
    for worker in workers:
        numbers = torch.zeros(len(SUMMARY), dtype=torch.float64)
        dist.recv(numbers, src=worker, tag=SUMMARY_TAG)
        summaries.append(dict(zip(SUMMARY, numbers.tolist())))
    loss = sum(s["loss"] for s in summaries) / len(summaries)
    tokens = sum(s["tokens"] for s in summaries)
    seconds = max(s["seconds"] for s in summaries)
    sent = sum(s["sent"] for s in summaries) / tokens
    received = sum(s["received"] for s in summaries) / tokens
    codec = qccl.stats()["settings"]["p2p_codec"]
    print(f"parameter server ({args.servers} servers, {len(workers)} workers, p2p codec {codec}, "
          f"parameters back {args.reply_codec}): final loss {loss:.4f} (perplexity {math.exp(loss):.2f}), "
          f"{tokens / seconds:.0f} tokens/s, {sent:.2f} bytes sent and {received:.2f} received per token "
          f"per worker, "
          f"{sum(s['stale'] for s in summaries):.0f} stale pushes", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1, help="ranks holding the parameters (the first ones)")
    parser.add_argument("--steps", type=int, default=200, help="steps per worker")
    parser.add_argument("--max-staleness", type=int, default=None,
                        help="updates a push may be behind (default: the number of workers)")
    parser.add_argument("--worker-timeout", type=float, default=60.0, help="seconds before a silent worker is dropped")
    parser.add_argument("--reply-codec", default="none", help="codec of the parameters sent back (default: exact)")
    parser.add_argument("--kill-worker-after", type=int, default=0, help="the last worker exits after N steps")
    parser.add_argument("--lr", type=float, default=3e-3, help="the servers' AdamW learning rate")
    add_data_arguments(parser)
    args = parser.parse_args()

    use_a_share_of_the_cores()
    dist.init_process_group("qccl", timeout=datetime.timedelta(seconds=max(60.0, 2 * args.worker_timeout)))
    rank = dist.get_rank()
    if args.max_staleness is None:
        args.max_staleness = dist.get_world_size() - args.servers
    # Parameters go back exactly, unless --reply-codec asks for a group whose codec applies.
    args.reply_group = None if args.reply_codec == "none" else dist.new_group(
        backend="qccl", pg_options=qccl.Options(p2p_codec=args.reply_codec))
    torch.manual_seed(args.seed)
    model = CharTransformer(context=args.context)
    if rank < args.servers:
        serve(args, model, rank)
    else:
        work(args, model, rank)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
