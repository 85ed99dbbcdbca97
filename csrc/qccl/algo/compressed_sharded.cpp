#include "qccl/algo/compressed_sharded.h"

#include <algorithm>
#include <functional>
#include <vector>

#include <ATen/ops/empty.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/zeros.h>

#include "qccl/algo/chunk_steps.h"
#include "qccl/algo/phase.h"

namespace qccl::algo {
namespace {

// Every rank's shard is cut into chunks of this many elements (the last one shorter):
// whole blocks, `chunkElements` across all ranks' shards together.
int64_t shardChunkElements(const codec::Codec& codec, int ranks, int64_t chunkElements) {
  const int64_t block = codec.block();
  return std::max(block, chunkElements / ranks / block * block);
}

// Chunk `index` of every rank's shard: elements [offset, offset + length) of each.
struct ShardChunk {
  int64_t index = 0;
  int64_t offset = 0;
  int64_t length = 0;
  at::Tensor values;  // float32 [ranks, length] (reduce-scatter) or [length] (all-gather)
  at::Tensor sent;
  at::Tensor received;
  c10::intrusive_ptr<c10d::Work> transfer;
};

using ChunkStage = std::function<void(ShardChunk&)>;

// Cuts every rank's shard of `n` elements into chunks and runs each through `send`, then
// through `finish` as many pipeline steps later as chunks stay on the wire (runStaggered).
void pipelineChunks(
    const codec::Codec& codec,
    int ranks,
    int64_t n,
    int64_t chunkElements,
    const ChunkStage& send,
    const ChunkStage& finish) {
  const int64_t chunk = shardChunkElements(codec, ranks, chunkElements);
  std::vector<ShardChunk> chunks;
  for (int64_t offset = 0; offset < n; offset += chunk) {
    ShardChunk c;
    c.index = static_cast<int64_t>(chunks.size());
    c.offset = offset;
    c.length = std::min(chunk, n - offset);
    chunks.push_back(std::move(c));
  }
  runStaggered(static_cast<int64_t>(chunks.size()), chunksInFlight(ranks * std::min(chunk, n)), {
      [&](int64_t i) { send(chunks[i]); },
      [&](int64_t i) { finish(chunks[i]); },
  });
}

codec::EncodeOptions encodeOptions(const ShardedOptions& options, int64_t chunk, int rank) {
  codec::EncodeOptions encode;
  encode.stochastic = options.stochastic;
  encode.seed = streamSeed(options.seed, chunk, rank, /*stage=*/0);
  return encode;
}

} // namespace

int64_t shardedWireBytes(const codec::Codec& codec, int64_t n, int ranks, int64_t chunkElements) {
  const int64_t chunk = shardChunkElements(codec, ranks, chunkElements);
  const int64_t tail = n % chunk;
  const int64_t perShard = (n / chunk) * codec.encodedBytes(chunk) + (tail > 0 ? codec.encodedBytes(tail) : 0);
  return perShard * (ranks - 1);
}

void compressedReduceScatter(
    Transport& net,
    const codec::Codec& codec,
    at::Tensor& output,
    const at::Tensor& input,
    const ShardedOptions& options,
    StatsSnapshot& stats) {
  const int rank = net.rank();
  const int ranks = net.size();
  const int64_t n = output.numel();
  auto shards = input.view({ranks, n});
  auto result = output.view({-1});

  // Encodes chunk c of the shards this rank does not own; sends each to its owner.
  auto sendContributions = [&](ShardChunk& c) {
    const int64_t bytes = codec.encodedBytes(c.length);
    {
      Phase encoding("qccl:encode", stats.encodeSeconds);
      auto contributions = shards.narrow(1, c.offset, c.length);
      if (options.premulFactor.defined()) {
        contributions = at::mul(contributions, options.premulFactor.to(input.scalar_type()));
      }
      c.values = at::empty({ranks, c.length}, input.options().dtype(at::kFloat));
      c.values.copy_(contributions);
      // The residual of chunk c: its rows, one per rank, follow the earlier chunks' rows.
      at::Tensor residual;
      if (options.residual.defined()) {
        residual = options.residual.narrow(0, ranks * c.offset, ranks * c.length).view({ranks, c.length});
      }
      c.sent = emptyBytes(bytes * (ranks - 1), c.values);
      uint8_t* out = c.sent.data_ptr<uint8_t>();
      for (int r = 0; r < ranks; ++r) {
        if (r != rank) {
          encodeWithFeedback(
              codec, c.values[r], residual.defined() ? residual[r] : at::Tensor(), out, encodeOptions(options, c.index, rank));
          out += bytes;
        }
      }
      c.received = emptyBytes(bytes * (ranks - 1), c.values);
    }
    stats.wireBytes += c.sent.numel();
    if (ranks > 1) {
      std::vector<int64_t> sendSplits(ranks, bytes);
      sendSplits[rank] = 0;
      auto recvSplits = sendSplits;  // Gloo's alltoall_base may rewrite them
      c.transfer = net.backend().alltoall_base(c.received, c.sent, recvSplits, sendSplits, c10d::AllToAllOptions());
    }
  };

  // Sums the contributions to this rank's shard of chunk c, in rank order.
  auto reduceOwnShard = [&](ShardChunk& c) {
    awaitTransfer(net, c.transfer, c.sent, "reduce_scatter (compressed, all-to-all)", stats.communicateSeconds);
    Phase decoding("qccl:decode", stats.decodeSeconds);
    auto sum = at::zeros({c.length}, c.values.options());
    const uint8_t* received = c.received.data_ptr<uint8_t>();
    for (int r = 0; r < ranks; ++r) {
      if (r == rank) {
        sum.add_(c.values[r]);
      } else {
        codec.decodeAdd(received, c.length, sum.data_ptr<float>());
        received += codec.encodedBytes(c.length);
      }
    }
    if (options.average) {
      sum.div_(ranks);
    }
    result.narrow(0, c.offset, c.length).copy_(sum);
    c.values.reset();
    c.received.reset();
  };

  pipelineChunks(codec, ranks, n, options.chunkElements, sendContributions, reduceOwnShard);
}

void compressedAllgather(
    Transport& net,
    const codec::Codec& codec,
    at::Tensor& output,
    const at::Tensor& input,
    const ShardedOptions& options,
    StatsSnapshot& stats) {
  const int rank = net.rank();
  const int ranks = net.size();
  const int64_t n = input.numel();
  auto shard = input.view({-1});
  auto gathered = output.view({-1});

  // Encodes this rank's chunk c; gathers every rank's.
  auto sendShard = [&](ShardChunk& c) {
    const int64_t bytes = codec.encodedBytes(c.length);
    {
      Phase encoding("qccl:encode", stats.encodeSeconds);
      auto values = shard.narrow(0, c.offset, c.length).to(at::kFloat).contiguous();  // only read
      c.sent = emptyBytes(bytes, values);
      codec.encode(values.data_ptr<float>(), c.length, c.sent.data_ptr<uint8_t>(), encodeOptions(options, c.index, rank));
      c.received = emptyBytes(bytes * ranks, values);
    }
    stats.wireBytes += bytes * (ranks - 1);
    if (ranks > 1) {
      c.transfer = net.backend()._allgather_base(c.received, c.sent, c10d::AllgatherOptions());
    } else {
      c.received.copy_(c.sent);
    }
  };

  // Every rank decodes every rank's chunk c from the same gathered bytes.
  auto decodeShards = [&](ShardChunk& c) {
    awaitTransfer(net, c.transfer, c.sent, "all_gather (compressed)", stats.communicateSeconds);
    Phase decoding("qccl:decode", stats.decodeSeconds);
    const int64_t bytes = codec.encodedBytes(c.length);
    const bool direct = output.scalar_type() == at::kFloat;
    auto decoded = direct ? at::Tensor() : at::empty({c.length}, output.options().dtype(at::kFloat));
    for (int r = 0; r < ranks; ++r) {
      auto target = gathered.narrow(0, r * n + c.offset, c.length);
      codec.decode(c.received.data_ptr<uint8_t>() + r * bytes, c.length,
                   direct ? target.data_ptr<float>() : decoded.data_ptr<float>());
      if (!direct) {
        target.copy_(decoded);
      }
    }
    c.received.reset();
  };

  pipelineChunks(codec, ranks, n, options.chunkElements, sendShard, decodeShards);
}

} // namespace qccl::algo
