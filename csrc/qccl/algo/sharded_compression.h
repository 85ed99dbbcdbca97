#pragma once

// qccl's reduce-scatter and all-gather (FSDP2, ZeRO): routes each call to the compressed
// path (compressed_sharded.h) or the exact one, and keeps what compressing them needs:
// the codecs (the group's codec for reduce-scatter, allgather_codec for all-gather, which
// usually carries weights), the reduce-scatters' error feedback (step_residuals.h), the
// call counter that seeds stochastic rounding, and counters for qccl.stats(). One per
// process group; calls run on its worker thread, routes and places are decided on the
// caller's.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include "qccl/algo/compression_state.h"
#include "qccl/algo/carried_call.h"
#include "qccl/algo/compression_stats.h"
#include "qccl/algo/hierarchical.h"
#include "qccl/algo/one_host.h"
#include "qccl/algo/route.h"
#include "qccl/algo/step_residuals.h"
#include "qccl/codec/codec.h"
#include "qccl/common/config.h"
#include "qccl/transport/gloo_transport.h"
#include "qccl/transport/started_transfer.h"

namespace qccl::algo {

class ShardedCompression {
 public:
  ShardedCompression(const Config& config, int ranks);

  // How a reduce-scatter into `shard` (its output) or an all-gather of `shard` (its input)
  // goes, from facts every rank shares, as BucketedAllreduce::route: the shard's dtype
  // and size (its full tensor's size counts for min_bytes), the op, the configuration.
  Route reduceScatterRoute(const at::Tensor& shard, const c10d::ReduceOp& op, bool forcedExact) const;
  Route allgatherRoute(const at::Tensor& shard, bool forcedExact) const;
  // The place in the training step of the reduce-scatter being issued (its residual's key).
  int64_t nextPlaceInStep() {
    return residuals_.nextPlace();
  }

  // output (n elements) = the reduction of every rank's input (ranks * n), contiguous CPU
  // tensors of one dtype; `route` and `place` as decided when the call was issued. With
  // `nodes` (a group on several nodes) a compressed one runs hierarchically; with
  // `oneHost` (a group on one host) every byte goes through it, encoded ones included.
  // An exact one whose data rode in its check (`carried`) is finished from it.
  void reduceScatter(
      GlooTransport& net,
      at::Tensor& output,
      const at::Tensor& input,
      const c10d::ReduceOp& op,
      Route route,
      int64_t place,
      const NodeTransports* nodes,
      OneHost* oneHost = nullptr,
      CarriedCall* carried = nullptr);
  // output (ranks * n) = every rank's input (n). An exact one returns with its transfer
  // running (algo/collectives.h), or done through `oneHost` when the group has one, or
  // from what its check carried.
  std::optional<StartedTransfer> allgather(
      GlooTransport& net,
      at::Tensor& output,
      const at::Tensor& input,
      Route route,
      OneHost* oneHost = nullptr,
      CarriedCall* carried = nullptr);

  StatsSnapshot reduceScatterStats() const {
    return reduceScatterStats_.snapshot();
  }
  StatsSnapshot allgatherStats() const {
    return allgatherStats_.snapshot();
  }
  void resetStats();
  void saveInto(CompressionState& state) const;
  void loadFrom(const CompressionState& state);

 private:
  // The counters of one call of `bytes` (the full, all ranks' tensor) on `route`.
  StatsSnapshot countCall(int64_t bytes, Route route) const;

  const Config config_;
  const int ranks_;
  std::unique_ptr<codec::Codec> gradientCodec_;  // null for codec "none"
  std::unique_ptr<codec::Codec> weightCodec_;    // null for allgather_codec "none"
  std::atomic<int64_t> calls_{0};
  StepResiduals residuals_;
  CompressionStats reduceScatterStats_;
  CompressionStats allgatherStats_;
};

} // namespace qccl::algo
