"""Which ranks of a group share a node, for hierarchical compression (exact inside a node,
compressed across nodes; docs/algorithms.md).

Without a setting the nodes are the hosts the group's ranks sit on, which the C++ side
learns from the ranks themselves when the group is created (transport/host_layout.h).
An explicit `ranks_per_node` (QCCL_RANKS_PER_NODE, qccl.Options) overrides that: it
counts consecutive *global* ranks, as torchrun places them, and each group gets its own
count from its members' global ranks: the C++ side only knows the group's own ranks,
and treats them as nodes of that many consecutive ranks.
"""

import collections
import dataclasses


def with_group_layout(options, world_size: int, global_ranks):
    """`options` with ranks_per_node as this group's own count of members per node.

    `global_ranks`: the members' global ranks (torch's creator knows them; an empty list
    means the whole world); None (a group made with qccl.create_backend, such as torchft's
    replica groups, whose ranks are not torchrun's) takes its ranks as they are. Unset or
    0, ranks_per_node stays 0: the hosts decide. A layout that puts the group's members on
    nodes unevenly (or out of order) raises a ValueError."""
    per_node = int(options.resolved()["ranks_per_node"])  # validated, environment included
    if per_node <= 1:
        return options
    ranks = list(global_ranks or []) or list(range(world_size))
    nodes = [rank // per_node for rank in ranks]
    counts = collections.Counter(nodes)
    members = counts[nodes[0]]
    if nodes != sorted(nodes) or any(count != members for count in counts.values()):
        raise ValueError(
            f"qccl: ranks_per_node={per_node} puts the group's global ranks {ranks} on nodes unevenly "
            f"({dict(counts)} ranks per node); hierarchical compression needs as many consecutive "
            "ranks of the group on every node (ranks_per_node=1 turns it off)"
        )
    return dataclasses.replace(options, ranks_per_node=members)


def agree_on_ranks_per_node(store, rank: int, world_size: int, per_node: int) -> None:
    """Raises ValueError on every rank unless all ranks of the group use the same count:
    otherwise some would wait for node sub-groups that the others never join."""
    store.set(f"ranks_per_node/{rank}", str(per_node))
    values = [int(v) for v in store.multi_get([f"ranks_per_node/{r}" for r in range(world_size)])]
    if len(set(values)) > 1:
        raise ValueError(
            f"qccl: the ranks of a group disagree on ranks_per_node (rank r's at position r: {values}); "
            "every rank must use the same QCCL_RANKS_PER_NODE / Options(ranks_per_node=...)"
        )
