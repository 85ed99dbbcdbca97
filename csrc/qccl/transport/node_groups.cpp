#include "qccl/transport/node_groups.h"

#include <string>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include "qccl/common/errors.h"
#include "qccl/transport/gloo_factory.h"

namespace qccl {
namespace {

int checkedRanksPerNode(int size, int ranksPerNode) {
  QCCL_CHECK_VALUE(
      ranksPerNode > 1 && ranksPerNode < size && size % ranksPerNode == 0, "ranks_per_node=", ranksPerNode,
      " does not split the group's ", size, " ranks into nodes of as many consecutive ranks each");
  return ranksPerNode;
}

c10::intrusive_ptr<c10d::Backend> subgroup(
    const c10::intrusive_ptr<c10d::Store>& store,
    const std::string& name,
    int rank,
    int size,
    std::chrono::milliseconds timeout) {
  QCCL_CHECK_VALUE(store, "hierarchical compression needs the group's store");
  return makeGlooBackend(c10::make_intrusive<c10d::PrefixStore>(name, store), rank, size, timeout);
}

} // namespace

c10::intrusive_ptr<c10d::Store> NodeGroups::nodeStore(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int ranksPerNode) {
  QCCL_CHECK_VALUE(store, "hierarchical compression needs the group's store");
  return c10::make_intrusive<c10d::PrefixStore>("node" + std::to_string(rank / ranksPerNode) + "/", store);
}

NodeGroups::NodeGroups(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int size,
    int ranksPerNode,
    std::chrono::milliseconds timeout,
    bool withNodeTransport)
    : cross_(subgroup(store, "cross" + std::to_string(rank % checkedRanksPerNode(size, ranksPerNode)) + "/",
                      rank / ranksPerNode, size / ranksPerNode, timeout),
             timeout) {
  if (withNodeTransport) {
    node_.emplace(makeGlooBackend(nodeStore(store, rank, ranksPerNode), rank % ranksPerNode, ranksPerNode, timeout),
                  timeout);
  }
}

void NodeGroups::setTimeout(std::chrono::milliseconds timeout) {
  if (node_) {
    node_->setTimeout(timeout);
  }
  cross_.setTimeout(timeout);
}

void NodeGroups::abort() {
  if (node_) {
    node_->abort();
  }
  cross_.abort();
}

} // namespace qccl
