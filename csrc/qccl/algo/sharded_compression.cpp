#include "qccl/algo/sharded_compression.h"

#include "qccl/algo/collectives.h"
#include "qccl/algo/compressed_sharded.h"
#include "qccl/algo/reduce_lowering.h"
#include "qccl/common/tensor_bytes.h"

namespace qccl::algo {
namespace {

// Bytes one rank sends in an exact reduce-scatter or all-gather of a `bytes` tensor (all
// ranks' shards): the other ranks' shards, once.
int64_t exactShardedWireBytes(int64_t bytes, int ranks) {
  return bytes * (ranks - 1) / ranks;
}

// The route of a call on one rank's `shard` that `codec` (null: codec none) would carry;
// `linearOp`: the call's reduce op (if any) is one a codec can carry. In the all-reduce's
// order of reasons (BucketedAllreduce::route).
Route routeOf(
    const codec::Codec* codec,
    const at::Tensor& shard,
    bool linearOp,
    bool forcedExact,
    int64_t minBytes,
    int ranks) {
  if (!codec) {
    return Route::ExactCodecNone;
  }
  if (forcedExact) {
    return Route::ExactForced;
  }
  if (!compressibleDtype(shard.scalar_type())) {
    return Route::ExactDtype;
  }
  if (!linearOp) {
    return Route::ExactReduceOp;
  }
  const int64_t bytes = byteSize(shard) * ranks;
  if (bytes < minBytes || shard.numel() == 0) {
    return Route::ExactSmall;
  }
  if (ranks > 1 && shardedWireBytes(*codec, shard.numel(), ranks) >= exactShardedWireBytes(bytes, ranks)) {
    return Route::ExactNoSaving;
  }
  return Route::Compressed;
}

} // namespace

ShardedCompression::ShardedCompression(const Config& config, int ranks)
    : config_(config),
      ranks_(ranks),
      gradientCodec_(codec::makeCodec(config.codec, config.block)),
      weightCodec_(codec::makeCodec(config.allgatherCodec, config.block)),
      residuals_(config.errorFeedbackMaxBytes) {}

Route ShardedCompression::reduceScatterRoute(const at::Tensor& shard, const c10d::ReduceOp& op, bool forcedExact) const {
  const bool linear = op.op_ == c10d::ReduceOp::SUM || op.op_ == c10d::ReduceOp::AVG || op.op_ == c10d::ReduceOp::PREMUL_SUM;
  return routeOf(gradientCodec_.get(), shard, linear, forcedExact, config_.minBytes, ranks_);
}

Route ShardedCompression::allgatherRoute(const at::Tensor& shard, bool forcedExact) const {
  return routeOf(weightCodec_.get(), shard, /*linearOp=*/true, forcedExact, config_.minBytes, ranks_);
}

StatsSnapshot ShardedCompression::countCall(int64_t bytes, Route route) const {
  StatsSnapshot delta;
  delta.calls = 1;
  delta.tensors = 1;
  delta.compressedTensors = route == Route::Compressed ? 1 : 0;
  delta.tensorsByRoute[static_cast<size_t>(route)] = 1;
  delta.logicalBytes = bytes;
  delta.exactWireBytes = exactShardedWireBytes(bytes, ranks_);
  if (route != Route::Compressed) {
    delta.wireBytes = delta.exactWireBytes;
  }
  return delta;
}

void ShardedCompression::reduceScatter(
    GlooTransport& net,
    at::Tensor& output,
    const at::Tensor& input,
    const c10d::ReduceOp& op,
    Route route,
    int64_t place,
    const NodeTransports* nodes,
    OneHost* oneHost,
    CarriedCall* carried) {
  auto delta = countCall(byteSize(input), route);
  if (route != Route::Compressed) {
    if (carried && carried->hasContributions()) {
      carried->finish();
    } else if (oneHost) {
      oneHost->reduceScatterTensor(output, input, op);
    } else {
      reduceScatterTensor(net, output, input, op);
    }
  } else {
    const auto lowered = lowerReduction(op, input.scalar_type(), "reduce_scatter");
    ShardedOptions options;
    options.premulFactor = lowered.premulFactor.value_or(at::Tensor());
    options.average = lowered.divideByWorldSize;
    options.stochastic = config_.stochastic;
    options.seed = static_cast<uint64_t>(calls_.fetch_add(1));
    if (config_.errorFeedback) {
      const int64_t n = nodes ? input.numel() / nodes->ranksPerNode() : input.numel();
      options.residual = residuals_.lookup(place, n, input.device());
    }
    if (nodes) {
      hierarchicalReduceScatter(*nodes, *gradientCodec_, output, input, options, delta);
    } else {
      compressedReduceScatter(oneHost ? *oneHost : static_cast<Transport&>(net), *gradientCodec_, output, input, options, delta);
    }
  }
  reduceScatterStats_.add(delta);
}

std::optional<StartedTransfer> ShardedCompression::allgather(
    GlooTransport& net,
    at::Tensor& output,
    const at::Tensor& input,
    Route route,
    OneHost* oneHost,
    CarriedCall* carried) {
  auto delta = countCall(byteSize(output), route);
  if (route != Route::Compressed) {
    allgatherStats_.add(delta);
    if (carried && carried->hasContributions()) {
      carried->finish();
      return std::nullopt;
    }
    if (oneHost) {
      oneHost->allgatherIntoTensor(output, input);
      return std::nullopt;
    }
    return allgatherIntoTensor(net, output, input);
  }
  ShardedOptions options;
  options.stochastic = config_.stochastic;
  options.seed = static_cast<uint64_t>(calls_.fetch_add(1));
  compressedAllgather(oneHost ? *oneHost : static_cast<Transport&>(net), *weightCodec_, output, input, options, delta);
  allgatherStats_.add(delta);
  return std::nullopt;
}

void ShardedCompression::resetStats() {
  reduceScatterStats_.reset();
  allgatherStats_.reset();
}

void ShardedCompression::saveInto(CompressionState& state) const {
  state.shardedCalls = calls_.load();
  residuals_.save(state.reduceScatterPlaces, state.reduceScatterResiduals);
}

void ShardedCompression::loadFrom(const CompressionState& state) {
  calls_.store(state.shardedCalls);
  residuals_.load(state.reduceScatterPlaces, state.reduceScatterResiduals);
}

} // namespace qccl::algo
