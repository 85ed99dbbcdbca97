#pragma once

// The compressed allreduce of one flat float32 buffer (docs/algorithms.md):
//
//   1. cut the buffer into chunks; cut each chunk into one shard per rank (whole blocks)
//   2. every rank encodes the shards it does not own and sends each to its owner
//      (all-to-all)
//   3. each owner decodes every contribution and sums them in float32 in rank order (its
//      own shard enters exactly), divides for AVG, re-encodes the sum
//   4. allgather the encoded sums; every rank, the owner too, decodes the same bytes
//
// Two quantization stages whatever the world size, and identical bits on every rank
// because every rank decodes identical bytes. Message sizes depend only on the element
// count and the configuration. Chunks are pipelined: later chunks are encoded while
// earlier ones are on the wire.
//
// The same code serves both devices: on CPU the codec is a CPU codec and the transport
// Gloo; on CUDA the codec enqueues kernels on the current stream (codec/cuda/
// stream_codec.h) and the transport is NCCL, whose waits are stream waits, so the host
// never waits for the GPU inside the call.

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "qccl/algo/compression_stats.h"
#include "qccl/codec/codec.h"
#include "qccl/transport/transport.h"

namespace qccl::algo {

struct CompressedAllreduceOptions {
  bool average = false;
  // Error feedback: float32, shaped like the buffer; added before encoding and replaced
  // by what the encoders dropped. Undefined: no error feedback.
  at::Tensor residual;
  bool stochastic = false;
  uint64_t seed = 0;  // shared state (the group's call counter): same on every rank
  int64_t chunkElements = int64_t{1} << 20;
};

// Reduces `buffer` (contiguous float32, on the device `codec` and `net` serve) in place
// across the ranks of `net`; adds what it sent, and its timings, to `stats`.
void compressedAllreduce(
    Transport& net,
    const codec::Codec& codec,
    at::Tensor& buffer,
    const CompressedAllreduceOptions& options,
    StatsSnapshot& stats);

struct CompressedJob {
  at::Tensor buffer;
  CompressedAllreduceOptions options;
};

// Reduces several buffers, each as compressedAllreduce would alone (bit for bit: the
// same chunks, shards, seeds and residuals), in one pipeline: the chunks of the next
// buffer go on the wire while the last ones of the previous are still there, so a burst
// of calls pays the pipeline's latency once.
void compressedAllreduce(Transport& net, const codec::Codec& codec, std::vector<CompressedJob>& jobs, StatsSnapshot& stats);

// The most bytes one rank sends in compressedAllreduce of `n` elements across `ranks`
// ranks (its share of the all-to-all, which varies a little with the rank because the
// last shards are shorter, plus the allgather). Depends only on the element count, the
// world size and the codec, so every rank computes the same number.
int64_t compressedWireBytes(
    const codec::Codec& codec,
    int64_t n,
    int ranks,
    int64_t chunkElements = CompressedAllreduceOptions{}.chunkElements);

} // namespace qccl::algo
