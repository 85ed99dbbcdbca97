"""torch.profiler shows qccl's calls as it shows Gloo's: one "qccl:<op>" event per call
with its shapes, and a compressed all-reduce's phases (encode, transfer, decode) as
ranges of their own."""

import collections

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile

import qccl

PHASES = {"encode", "transfer", "decode"}  # ranges inside a call, not calls


def _events(prof, prefix):
    """name -> list of input shapes, for the events whose name starts with `prefix`."""
    found = collections.defaultdict(list)
    for event in prof.events():
        if event.name.startswith(prefix):
            found[event.name].append(event.input_shapes)
    return found


def _calls(group, rank):
    t = torch.ones(1000)
    dist.all_reduce(t, group=group)
    dist.all_reduce(t, group=group)
    dist.broadcast(t, 0, group=group)
    out = torch.empty(1000 * dist.get_world_size(group))
    dist.all_gather_into_tensor(out, t, group=group)
    if rank == 0:
        dist.send(t, 1, group=group)
    elif rank == 1:
        dist.recv(t, 0, group=group)
    dist.barrier(group=group)


def rank_profiled(ctx):
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        _calls(None, ctx.rank)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as reference:
        _calls(ctx.gloo, ctx.rank)
    qccl_counts = {name[len("qccl:"):]: len(s) for name, s in _events(prof, "qccl:").items()}
    qccl_counts = {op: n for op, n in qccl_counts.items() if op not in PHASES}
    gloo_counts = {name[len("gloo:"):]: len(s) for name, s in _events(reference, "gloo:").items()}
    shapes = {op: _events(prof, f"qccl:{op}")[f"qccl:{op}"] for op in ("all_reduce", "all_gather_into_tensor")}
    return qccl_counts, gloo_counts, shapes


def test_every_call_is_one_profiler_event(world):
    for rank, (counts, gloo_counts, shapes) in enumerate(world.run(rank_profiled)):
        point_to_point = {0: {"send": 1}, 1: {"recv": 1}}.get(rank, {})
        assert counts == {"all_reduce": 2, "broadcast": 1, "all_gather_into_tensor": 1, "barrier": 1,
                          **point_to_point}, counts
        # Gloo's events for the same calls (its all_gather_into_tensor is "all_gather").
        assert gloo_counts.get("all_reduce") == 2 and gloo_counts.get("broadcast") == 1, gloo_counts
        # The call's input shapes, as Gloo's events record them.
        assert shapes == {"all_reduce": [[[1000]], [[1000]]], "all_gather_into_tensor": [[[1000]]]}, shapes


def rank_compressed_phases(ctx):
    group = dist.new_group(pg_options=qccl.Options(codec="int8", min_bytes=0))
    t = torch.randn(50_000)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        dist.all_reduce(t, group=group)
    dist.destroy_process_group(group)
    return {name: len(s) for name, s in _events(prof, "qccl:").items()}


def test_a_compressed_all_reduce_shows_its_phases(world):
    for counts in world.run(rank_compressed_phases):
        assert counts.get("qccl:all_reduce") == 1, counts
        for phase in ("qccl:encode", "qccl:transfer", "qccl:decode"):
            assert counts.get(phase, 0) >= 1, counts
