#pragma once

// Hierarchical compression (docs/algorithms.md): exact among the ranks of a node, whose
// links are fast, compressed only across nodes, as DeepSpeed ZeRO++'s qgZ.
//
//   all-reduce:     exact reduce-scatter in the node; compressed all-reduce of each
//                   rank's piece among the ranks with its place in their nodes; exact
//                   all-gather in the node. Every rank of the group ends with the same
//                   bits (the compressed stage gives them to one rank per node, the
//                   exact all-gather to the rest).
//   reduce-scatter: exact reduce-scatter in the node, which sums the node's
//                   contributions to every shard at the rank of the node whose place
//                   matches the shard owner's; compressed reduce-scatter of those node
//                   sums across nodes. One quantization of each node's sum.
//
// The node stages go through shared memory when the node's ranks share a host (they
// reduce in Gloo's order there too: the same bits either way).

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "qccl/algo/compressed_allreduce.h"
#include "qccl/algo/compressed_sharded.h"
#include "qccl/algo/compression_stats.h"
#include "qccl/codec/codec.h"
#include "qccl/transport/transport.h"

namespace qccl::algo {

class OneHost;

struct NodeTransports {
  // The ranks of this rank's node: through shared memory when they share a host
  // (nodeMemory), else over `node` (null when nodeMemory is set).
  OneHost* nodeMemory;
  Transport* node;
  Transport& cross;  // one rank per node: those with this rank's place in its node

  int ranksPerNode() const;
};

// The elements of a hierarchical all-reduce's error-feedback residual for a buffer of n:
// this rank's piece of it.
int64_t nodePieceElements(int64_t n, int ranksPerNode);

// As compressedAllreduce(jobs), each job's residual holding nodePieceElements(). AVG
// divides by the whole group's size.
void hierarchicalAllreduce(
    const NodeTransports& nets,
    const codec::Codec& codec,
    std::vector<CompressedJob>& jobs,
    StatsSnapshot& stats);

// As compressedReduceScatter (contiguous CPU tensors; output n, input ranks * n), with a
// residual of input.numel() / ranksPerNode elements.
void hierarchicalReduceScatter(
    const NodeTransports& nets,
    const codec::Codec& codec,
    at::Tensor& output,
    const at::Tensor& input,
    const ShardedOptions& options,
    StatsSnapshot& stats);

} // namespace qccl::algo
