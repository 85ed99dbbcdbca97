#pragma once

// The compressed collectives of sharded data parallelism (FSDP2, ZeRO), each one stage of
// the compressed all-reduce (compressed_allreduce.h) on its own (docs/algorithms.md):
//
//   reduce-scatter: every rank encodes the shards it does not own and sends each to its
//     owner (all-to-all); the owner decodes every contribution and sums them in float32
//     in rank order, its own shard entering exactly. One quantization, with error
//     feedback on what was sent; the result depends only on the inputs.
//   all-gather: every rank encodes its shard; the encoded shards are all-gathered and
//     every rank, the owner too, decodes the same bytes, so all ranks hold the same bits.
//
// Each rank's shard is encoded on its own (shards need not be whole blocks), in chunks
// that are pipelined as the all-reduce's are. CPU tensors over Gloo; any floating dtype
// (encoded as float32).

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "qccl/algo/compression_stats.h"
#include "qccl/codec/codec.h"
#include "qccl/transport/transport.h"

namespace qccl::algo {

struct ShardedOptions {
  // Reduce-scatter: multiplies every contribution (PREMUL_SUM), in the input's dtype as
  // NCCL does (and the exact path, reduce_lowering.h); undefined: none.
  at::Tensor premulFactor;
  bool average = false;       // reduce-scatter: divides the sum by the world size (AVG)
  // Reduce-scatter error feedback: float32, as many elements as the input, in the order
  // the chunks encode them (compressedReduceScatter's business); undefined: none.
  at::Tensor residual;
  bool stochastic = false;
  uint64_t seed = 0;
  int64_t chunkElements = int64_t{1} << 20;  // elements of every rank's shard of a chunk together
};

// output (n elements) = the reduction of every rank's input (ranks * n elements, shard r
// for rank r); both contiguous, of one floating dtype, on the CPU.
void compressedReduceScatter(
    Transport& net,
    const codec::Codec& codec,
    at::Tensor& output,
    const at::Tensor& input,
    const ShardedOptions& options,
    StatsSnapshot& stats);

// output (ranks * n elements) = every rank's input (n elements), decoded; contiguous, of
// one floating dtype, on the CPU.
void compressedAllgather(
    Transport& net,
    const codec::Codec& codec,
    at::Tensor& output,
    const at::Tensor& input,
    const ShardedOptions& options,
    StatsSnapshot& stats);

// The bytes one rank sends in either of them for shards of `n` elements across `ranks`:
// (ranks - 1) encoded shards. Every rank computes the same number.
int64_t shardedWireBytes(
    const codec::Codec& codec,
    int64_t n,
    int ranks,
    int64_t chunkElements = ShardedOptions{}.chunkElements);

} // namespace qccl::algo
