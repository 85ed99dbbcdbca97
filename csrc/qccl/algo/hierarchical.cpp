#include "qccl/algo/hierarchical.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/zeros.h>

#include "qccl/algo/one_host.h"
#include "qccl/algo/phase.h"

namespace qccl::algo {
namespace {

constexpr int64_t kFloatBytes = sizeof(float);

c10d::ReduceScatterOptions sumOptions() {
  c10d::ReduceScatterOptions options;
  options.reduceOp = c10d::ReduceOp::SUM;
  return options;
}

// Counts bytes sent to ranks of this rank's own node.
void sentInNode(StatsSnapshot& stats, int64_t bytes) {
  stats.wireBytes += bytes;
  stats.nodeWireBytes += bytes;
}

// The node stages: through shared memory when the node has it (done on return: no work),
// else posted on the node's Gloo transport (the caller waits for the work).
c10::intrusive_ptr<c10d::Work> nodeReduceScatter(const NodeTransports& nets, at::Tensor& out, at::Tensor& in) {
  if (nets.nodeMemory) {
    nets.nodeMemory->reduceScatterTensor(out, in, c10d::ReduceOp::SUM);
    return {};
  }
  return nets.node->backend()._reduce_scatter_base(out, in, sumOptions());
}

c10::intrusive_ptr<c10d::Work> nodeAllgather(const NodeTransports& nets, at::Tensor& out, at::Tensor& in) {
  if (nets.nodeMemory) {
    nets.nodeMemory->allgatherIntoTensor(out, in);
    return {};
  }
  return nets.node->backend()._allgather_base(out, in, c10d::AllgatherOptions());
}

void waitInNode(const NodeTransports& nets, const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) {
  if (work) {
    nets.node->waitFor(work, what);
  }
}

} // namespace

int NodeTransports::ranksPerNode() const {
  return nodeMemory ? nodeMemory->size() : node->size();
}

int64_t nodePieceElements(int64_t n, int ranksPerNode) {
  return (n + ranksPerNode - 1) / ranksPerNode;
}

void hierarchicalAllreduce(
    const NodeTransports& nets,
    const codec::Codec& codec,
    std::vector<CompressedJob>& jobs,
    StatsSnapshot& stats) {
  const int perNode = nets.ranksPerNode();
  const int ranks = perNode * nets.cross.size();
  // Each buffer, padded to a whole number of pieces, and this rank's piece of it.
  std::vector<at::Tensor> padded;
  std::vector<CompressedJob> pieces;
  {
    Phase transfer("qccl:transfer", stats.communicateSeconds);
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& job : jobs) {
      const int64_t n = job.buffer.numel();
      const int64_t m = nodePieceElements(n, perNode);
      auto whole = job.buffer;  // Gloo's scratch space: overwritten by the result anyway
      if (m * perNode != n) {
        whole = at::zeros({m * perNode}, job.buffer.options());
        whole.narrow(0, 0, n).copy_(job.buffer);
      }
      CompressedJob piece{at::empty({m}, job.buffer.options()), job.options};
      piece.options.average = false;  // by the whole group's size, below
      works.push_back(nodeReduceScatter(nets, piece.buffer, whole));
      sentInNode(stats, (perNode - 1) * m * kFloatBytes);
      padded.push_back(whole);
      pieces.push_back(std::move(piece));
    }
    for (auto& work : works) {
      waitInNode(nets, work, "all_reduce (hierarchical, exact reduce-scatter in the node)");
    }
  }

  compressedAllreduce(nets.cross, codec, pieces, stats);

  Phase transfer("qccl:transfer", stats.communicateSeconds);
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (size_t j = 0; j < jobs.size(); ++j) {
    if (jobs[j].options.average) {
      pieces[j].buffer.div_(ranks);
    }
    works.push_back(nodeAllgather(nets, padded[j], pieces[j].buffer));
    sentInNode(stats, (perNode - 1) * pieces[j].buffer.numel() * kFloatBytes);
  }
  for (size_t j = 0; j < jobs.size(); ++j) {
    waitInNode(nets, works[j], "all_reduce (hierarchical, exact all-gather in the node)");
    if (!padded[j].is_same(jobs[j].buffer)) {
      jobs[j].buffer.copy_(padded[j].narrow(0, 0, jobs[j].buffer.numel()));
    }
  }
}

void hierarchicalReduceScatter(
    const NodeTransports& nets,
    const codec::Codec& codec,
    at::Tensor& output,
    const at::Tensor& input,
    const ShardedOptions& options,
    StatsSnapshot& stats) {
  const int perNode = nets.ranksPerNode();
  const int nodes = nets.cross.size();
  const int64_t n = output.numel();
  if (n == 0) {
    return;
  }
  // Contributions by the owner's place in its node: the shard for rank (node k, place i)
  // goes to row i, column k, so the node's reduce-scatter leaves at place i the node's
  // sums for every rank with place i.
  auto contributions = input.view({nodes, perNode, n});
  if (options.premulFactor.defined()) {
    contributions = at::mul(contributions, options.premulFactor.to(input.scalar_type()));
  }
  auto byPlace = at::empty({perNode, nodes, n}, input.options().dtype(at::kFloat));
  auto nodeSums = at::empty({nodes * n}, byPlace.options());
  {
    Phase transfer("qccl:transfer", stats.communicateSeconds);
    byPlace.copy_(contributions.transpose(0, 1));
    auto flat = byPlace.view({-1});
    waitInNode(nets, nodeReduceScatter(nets, nodeSums, flat),
               "reduce_scatter (hierarchical, exact reduce-scatter in the node)");
    sentInNode(stats, (perNode - 1) * nodes * n * kFloatBytes);
  }

  ShardedOptions across = options;
  across.premulFactor = at::Tensor();  // applied above
  across.average = false;              // by the whole group's size, below
  auto sum = at::empty({n}, byPlace.options());
  compressedReduceScatter(nets.cross, codec, sum, nodeSums, across, stats);
  if (options.average) {
    sum.div_(perNode * nodes);
  }
  output.view({-1}).copy_(sum);
}

} // namespace qccl::algo
