"""Checkpoint state of a qccl group: error-feedback residuals and the stochastic-rounding
call counter, per rank, recording whose they are."""

import io
import warnings

import torch
import torch.distributed as dist

from .compression import _backend

# 1: settings, calls, residuals. 2: also the owner (rank, world size, the group's ranks).
# 3: also the reduce-scatters' state (sharded_calls, reduce_scatter_places/_residuals).
STATE_VERSION = 3


def _owner(group) -> dict:
    group = group if group is not None else dist.group.WORLD
    return {
        "rank": dist.get_rank(group),
        "world_size": dist.get_world_size(group),
        "group_ranks": dist.get_process_group_ranks(group),
    }


def state_dict(group=None) -> dict:
    """This rank's compression state: save it with the rest of the rank's checkpoint.

    Holds the error-feedback residuals (all-reduce and reduce-scatter), the call counters
    that seed stochastic rounding, the group's settings and the owner: this rank, the
    group's size and its global ranks. Waits for the group's queued work first."""
    backend = _backend(group)
    return {
        "version": STATE_VERSION,
        **_owner(group),
        "settings": backend.settings(),
        **backend.compression_state(),
    }


def load_state_dict(group, state: dict) -> None:
    """Restores what state_dict() returned on this rank of this group (same rank, world
    size, global ranks and settings); raises ValueError for anyone else's state."""
    backend = _backend(group)
    owner = _owner(group)
    where = f"qccl: load_state_dict on rank {owner['rank']}"
    if not isinstance(state, dict) or "version" not in state:
        raise ValueError(f"{where}: expects a dict made by qccl.state_dict(), got {type(state).__name__}")
    if state["version"] == 1:
        warnings.warn(
            f"{where}: a version 1 state records no rank or group, so it is loaded without "
            "checking that it is this rank's; save a new one with qccl.state_dict()",
            stacklevel=2,
        )
    elif state["version"] in (2, STATE_VERSION):
        saved = {key: state[key] for key in owner}
        if saved != owner:
            raise ValueError(
                f"{where}: the state belongs to rank {saved['rank']} of world size "
                f"{saved['world_size']} (global ranks {saved['group_ranks']}), not to this rank "
                f"{owner['rank']} of world size {owner['world_size']} (global ranks "
                f"{owner['group_ranks']}); every rank loads the state it saved (inside a "
                "torch.distributed.checkpoint, through qccl.CompressionStateful)"
            )
    else:
        raise ValueError(
            f"{where}: the state has version {state['version']!r}; this qccl reads versions 1 "
            f"to {STATE_VERSION} (was it saved by a newer qccl?)"
        )
    # A state saved before a setting existed does not record it.
    current = {key: value for key, value in backend.settings().items() if key in state["settings"]}
    if state["settings"] != current:
        raise ValueError(
            f"{where}: the state was saved with settings {state['settings']} but this group "
            f"uses {backend.settings()}"
        )
    backend.load_compression_state(
        int(state["calls"]),
        list(state["residuals"]),
        int(state.get("sharded_calls", 0)),
        [int(place) for place in state.get("reduce_scatter_places", [])],
        list(state.get("reduce_scatter_residuals", [])),
    )


class CompressionStateful:
    """The group's compression state as a torch.distributed.checkpoint (DCP) Stateful.

    DCP takes entries that several ranks save under the same key for replicas and keeps one
    copy, so a plain qccl.state_dict() in a DCP checkpoint would come back as one rank's
    state on every rank. This object keeps this rank's state, serialized, under a key that
    names its global rank ("rank3"), so every rank's is saved and each rank loads its own:

        state = {"model": ..., "optimizer": ..., "qccl": qccl.CompressionStateful(group)}
        dcp.save(state, checkpoint_id=path)
        dcp.load(state, checkpoint_id=path)   # restores the group's state on every rank
    """

    def __init__(self, group=None):
        self.group = group

    def _key(self) -> str:
        return f"rank{dist.get_rank()}"

    def state_dict(self) -> dict:
        buffer = io.BytesIO()
        torch.save(state_dict(self.group), buffer)
        return {self._key(): buffer.getvalue()}

    def load_state_dict(self, state: dict) -> None:
        key = self._key()
        if key not in state:
            raise ValueError(
                f"qccl: CompressionStateful.load_state_dict on global rank {dist.get_rank()}: the "
                f"checkpoint holds no state under '{key}' (it holds {sorted(state)})"
            )
        load_state_dict(self.group, torch.load(io.BytesIO(state[key]), weights_only=True))
