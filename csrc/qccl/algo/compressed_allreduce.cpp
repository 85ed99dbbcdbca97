#include "qccl/algo/compressed_allreduce.h"

#include <algorithm>

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "qccl/algo/chunk_steps.h"
#include "qccl/algo/phase.h"

namespace qccl::algo {
namespace {

// Shard r of a chunk: elements [begin(r), begin(r) + length(r)). Every shard but the last
// non-empty one holds `shardElements`, a whole number of blocks.
struct ShardPlan {
  int64_t total = 0;
  int64_t shardElements = 0;

  int64_t begin(int r) const {
    return std::min(total, r * shardElements);
  }
  int64_t length(int r) const {
    return std::min(total, (r + 1) * shardElements) - begin(r);
  }
};

ShardPlan planShards(int64_t n, int64_t block, int ranks) {
  const int64_t blocks = (n + block - 1) / block;
  const int64_t blocksPerShard = (blocks + ranks - 1) / ranks;
  return {n, blocksPerShard * block};
}

// Bytes of one chunk of `n` elements sent by the rank that sends the most: the owner of
// the last shard (shards shrink toward the end, so it owns the shortest), which sends
// every other shard in the all-to-all, then its encoded sum, padded, to each other rank.
int64_t chunkWireBytes(const codec::Codec& codec, int64_t n, int ranks) {
  const auto shards = planShards(n, codec.block(), ranks);
  int64_t bytes = codec.encodedBytes(shards.shardElements) * (ranks - 1);
  for (int r = 0; r + 1 < ranks; ++r) {
    bytes += codec.encodedBytes(shards.length(r));
  }
  return bytes;
}

// One chunk's buffers and transport works while it is in flight. Each stage's works are
// one collective, or (pairwise) the receives from every peer and then the sends to them.
struct Chunk {
  const CompressedAllreduceOptions* options = nullptr;  // its buffer's
  int64_t index = 0;  // within its buffer
  at::Tensor values;    // this chunk of the buffer
  at::Tensor residual;  // this chunk of the residual, or undefined
  ShardPlan shards;
  at::Tensor sent;
  at::Tensor received;
  std::vector<c10::intrusive_ptr<c10d::Work>> exchange;  // the all-to-all
  int64_t segmentBytes = 0;  // one rank's encoded shard in the allgather, padded
  at::Tensor mine;
  at::Tensor gathered;
  std::vector<c10::intrusive_ptr<c10d::Work>> gather;  // the allgather
};

class ChunkPipeline {
 public:
  ChunkPipeline(Transport& net, const codec::Codec& codec, StatsSnapshot& stats)
      : net_(net),
        codec_(codec),
        stats_(stats),
        rank_(net.rank()),
        ranks_(net.size()),
        pairwise_(ranks_ > 1 && net.postsReceivesAhead()) {}

  // Pairwise only: posts chunk c's receives of both stages before its peers send, so
  // their bytes leave as soon as they are encoded (Transport::postsReceivesAhead). The
  // calls' sizes were agreed by the argument check, so every receive fits its message.
  void postReceives(Chunk& c) {
    if (!pairwise_) {
      return;
    }
    const int64_t contribution = codec_.encodedBytes(c.shards.length(rank_));
    c.received = emptyBytes(contribution * (ranks_ - 1), c.values);
    c.segmentBytes = codec_.encodedBytes(c.shards.shardElements);
    c.gathered = emptyBytes(c.segmentBytes * ranks_, c.values);
    int64_t offset = 0;
    for (int r = 0; r < ranks_; ++r) {
      if (r == rank_) {
        continue;
      }
      if (contribution > 0) {  // its sender skips an empty shard alike
        c.exchange.push_back(net_.receiveBytes(c.received.narrow(0, offset, contribution), r, kAllToAllSlot));
      }
      offset += contribution;
      c.gather.push_back(
          net_.receiveBytes(c.gathered.narrow(0, r * c.segmentBytes, c.segmentBytes), r, kAllGatherSlot));
    }
  }

  // Steps 1-2: encode the shards this rank does not own, send them (the all-to-all).
  void sendContributions(Chunk& c) {
    std::vector<int64_t> sendSplits(ranks_, 0);
    std::vector<int64_t> recvSplits(ranks_, 0);
    {
      Phase encoding("qccl:encode", stats_.encodeSeconds);
      for (int r = 0; r < ranks_; ++r) {
        if (r != rank_) {
          sendSplits[r] = codec_.encodedBytes(c.shards.length(r));
          recvSplits[r] = codec_.encodedBytes(c.shards.length(rank_));
        }
      }
      c.sent = emptyBytes(totalOf(sendSplits), c.values);
      int64_t offset = 0;
      for (int r = 0; r < ranks_; ++r) {
        if (r != rank_) {
          encodeShard(c, r, c.sent.data_ptr<uint8_t>() + offset, /*stage=*/0);
          offset += sendSplits[r];
        }
      }
      if (!pairwise_) {
        c.received = emptyBytes(totalOf(recvSplits), c.values);
      }
    }
    stats_.wireBytes += c.sent.numel();
    if (pairwise_) {
      int64_t offset = 0;
      for (int r = 0; r < ranks_; ++r) {
        if (sendSplits[r] > 0) {
          c.exchange.push_back(net_.sendBytes(c.sent.narrow(0, offset, sendSplits[r]), r, kAllToAllSlot));
        }
        offset += sendSplits[r];
      }
    } else if (ranks_ > 1) {
      c.exchange.push_back(
          net_.backend().alltoall_base(c.received, c.sent, recvSplits, sendSplits, c10d::AllToAllOptions()));
    }
  }

  // Step 3: sum the contributions to this rank's shard, re-encode it, send it to every
  // rank (the allgather).
  void reduceOwnShard(Chunk& c) {
    awaitTransfers(net_, c.exchange, c.sent, "all_reduce (compressed, all-to-all)", stats_.communicateSeconds);

    const int64_t begin = c.shards.begin(rank_);
    const int64_t length = c.shards.length(rank_);
    auto own = c.values.narrow(0, begin, length);
    auto sum = at::zeros({length}, own.options());
    {
      Phase decoding("qccl:decode", stats_.decodeSeconds);
      const uint8_t* received = c.received.data_ptr<uint8_t>();
      for (int r = 0; r < ranks_; ++r) {  // rank order: the same sum on every run
        if (r == rank_) {
          sum.add_(own);
        } else {
          codec_.decodeAdd(received, length, sum.data_ptr<float>());
          received += codec_.encodedBytes(length);
        }
      }
      c.received.reset();
      if (c.options->average) {
        sum.div_(ranks_);
      }
    }
    {
      Phase encoding("qccl:encode", stats_.encodeSeconds);
      c.segmentBytes = codec_.encodedBytes(c.shards.shardElements);
      c.mine = at::zeros({c.segmentBytes}, c.values.options().dtype(at::kByte));
      encode(c, sum, c.residual.defined() ? c.residual.narrow(0, begin, length) : at::Tensor(),
             c.mine.data_ptr<uint8_t>(), /*stage=*/1);
      if (!pairwise_) {
        c.gathered = emptyBytes(c.segmentBytes * ranks_, c.values);
      }
    }
    stats_.wireBytes += c.segmentBytes * (ranks_ - 1);
    if (pairwise_) {
      c.gathered.narrow(0, rank_ * c.segmentBytes, c.segmentBytes).copy_(c.mine);
      for (int r = 0; r < ranks_; ++r) {
        if (r != rank_) {
          c.gather.push_back(net_.sendBytes(c.mine, r, kAllGatherSlot));
        }
      }
    } else if (ranks_ > 1) {
      c.gather.push_back(net_.backend()._allgather_base(c.gathered, c.mine, c10d::AllgatherOptions()));
    } else {
      c.gathered.copy_(c.mine);
    }
  }

  // Step 4: every rank decodes every shard from the same gathered bytes.
  void decodeResult(Chunk& c) {
    awaitTransfers(net_, c.gather, c.mine, "all_reduce (compressed, allgather)", stats_.communicateSeconds);
    Phase decoding("qccl:decode", stats_.decodeSeconds);
    const uint8_t* gathered = c.gathered.data_ptr<uint8_t>();
    float* values = c.values.data_ptr<float>();
    for (int r = 0; r < ranks_; ++r) {
      codec_.decode(gathered + r * c.segmentBytes, c.shards.length(r), values + c.shards.begin(r));
    }
    c.gathered.reset();
  }

 private:
  static int64_t totalOf(const std::vector<int64_t>& v) {
    int64_t total = 0;
    for (auto x : v) {
      total += x;
    }
    return total;
  }

  void encodeShard(Chunk& c, int r, uint8_t* out, int stage) {
    auto values = c.values.narrow(0, c.shards.begin(r), c.shards.length(r));  // overwritten by the result anyway
    encode(c, values, c.residual.defined() ? c.residual.narrow(0, c.shards.begin(r), c.shards.length(r)) : at::Tensor(),
           out, stage);
  }

  // Encodes `values` of chunk `c` to `out`, with error feedback through `residual`.
  void encode(const Chunk& c, const at::Tensor& values, const at::Tensor& residual, uint8_t* out, int stage) {
    codec::EncodeOptions encodeOptions;
    encodeOptions.stochastic = c.options->stochastic;
    encodeOptions.seed = streamSeed(c.options->seed, c.index, rank_, stage);
    encodeWithFeedback(codec_, values, residual, out, encodeOptions);
  }

  Transport& net_;
  const codec::Codec& codec_;
  StatsSnapshot& stats_;
  const int rank_;
  const int ranks_;
  const bool pairwise_;
};

} // namespace

int64_t compressedWireBytes(const codec::Codec& codec, int64_t n, int ranks, int64_t chunkElements) {
  chunkElements = std::max<int64_t>(chunkElements, 1);
  const int64_t fullChunks = n / chunkElements;
  const int64_t tail = n % chunkElements;
  return (fullChunks > 0 ? fullChunks * chunkWireBytes(codec, chunkElements, ranks) : 0) +
         (tail > 0 ? chunkWireBytes(codec, tail, ranks) : 0);
}

void compressedAllreduce(
    Transport& net,
    const codec::Codec& codec,
    at::Tensor& buffer,
    const CompressedAllreduceOptions& options,
    StatsSnapshot& stats) {
  std::vector<CompressedJob> jobs{{buffer, options}};
  compressedAllreduce(net, codec, jobs, stats);
}

void compressedAllreduce(Transport& net, const codec::Codec& codec, std::vector<CompressedJob>& jobs, StatsSnapshot& stats) {
  // Every buffer's chunks, one buffer after the other.
  std::vector<Chunk> chunks;
  for (const auto& job : jobs) {
    const int64_t n = job.buffer.numel();
    const int64_t chunkElements = std::max<int64_t>(job.options.chunkElements, 1);
    for (int64_t index = 0; index * chunkElements < n; ++index) {
      Chunk c;
      c.options = &job.options;
      c.index = index;
      const int64_t offset = index * chunkElements;
      const int64_t length = std::min(chunkElements, n - offset);
      c.values = job.buffer.narrow(0, offset, length);
      if (job.options.residual.defined()) {
        c.residual = job.options.residual.narrow(0, offset, length);
      }
      c.shards = planShards(length, codec.block(), net.size());
      chunks.push_back(std::move(c));
    }
  }

  // Transfers go out in the same order on every rank. Chunk c's all-to-all is posted
  // at step c, its allgather at step c + depth, and its result decoded at step c + 2 *
  // depth, so `depth` all-to-alls and `depth` allgathers are on the wire while the
  // worker encodes and decodes: enough bytes in flight to keep a link with latency full.
  // Small chunks (a burst of small calls) get more of them in flight. The depth depends
  // only on the chunk sizes, so every rank picks the same. Pairwise, a chunk's receives
  // are posted `depth` steps before its all-to-all (the first `depth` chunks' at once).
  ChunkPipeline pipeline(net, codec, stats);
  int64_t largest = 1;
  for (const auto& c : chunks) {
    largest = std::max(largest, c.values.numel());
  }
  const auto count = static_cast<int64_t>(chunks.size());
  const int64_t depth = chunksInFlight(largest);
  runWithReceivesAhead(count, depth, [&](int64_t i) { pipeline.postReceives(chunks[i]); }, {
      [&](int64_t i) { pipeline.sendContributions(chunks[i]); },
      [&](int64_t i) { pipeline.reduceOwnShard(chunks[i]); },
      [&](int64_t i) { pipeline.decodeResult(chunks[i]); },
  });
}

} // namespace qccl::algo
