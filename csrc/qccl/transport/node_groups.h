#pragma once

// The two sub-groups of a group whose ranks sit on several nodes (hierarchical
// compression, docs/algorithms.md): nodes are runs of `ranksPerNode` consecutive ranks.
//
//   node:  the ranks of this rank's node (fast links: exact traffic)
//   cross: one rank per node, those with this rank's place in its node (slow links:
//          compressed traffic)
//
// Each is a Gloo transport of its own on the group's store, made when the group is;
// `node` only when its ranks do not share memory (the group then passes them a
// shared-memory channel of their own instead, transport/shm/connect.h).

#include <chrono>
#include <optional>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "qccl/transport/gloo_transport.h"

namespace qccl {

class NodeGroups {
 public:
  // Collective: every rank of the group makes its NodeGroups at once, all with the same
  // `withNodeTransport`. Raises ValueError unless 1 < ranksPerNode < size and
  // ranksPerNode divides size.
  NodeGroups(
      const c10::intrusive_ptr<c10d::Store>& store,
      int rank,
      int size,
      int ranksPerNode,
      std::chrono::milliseconds timeout,
      bool withNodeTransport = true);

  // Where the node's ranks know each other's store keys (a shared-memory channel's).
  static c10::intrusive_ptr<c10d::Store> nodeStore(
      const c10::intrusive_ptr<c10d::Store>& store,
      int rank,
      int ranksPerNode);

  // Null without a node transport.
  GlooTransport* node() {
    return node_ ? &*node_ : nullptr;
  }
  GlooTransport& cross() {
    return cross_;
  }
  void setTimeout(std::chrono::milliseconds timeout);
  void abort();

 private:
  GlooTransport cross_;
  std::optional<GlooTransport> node_;
};

} // namespace qccl
