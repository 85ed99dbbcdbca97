#pragma once

// qccl's allreduce: routes each tensor to the compressed or the exact path, fuses lists
// of tensors into buckets (bucket/bucket_plan.h), runs them, and keeps the group's
// compression state (error-feedback residuals, the call counter that seeds stochastic
// rounding) and counters. One per process group, used from its worker thread; stats and
// state may be read from any thread.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include "qccl/algo/compressed_allreduce.h"
#include "qccl/algo/compression_state.h"
#include "qccl/algo/compression_stats.h"
#include "qccl/algo/hierarchical.h"
#include "qccl/algo/residual_store.h"
#include "qccl/algo/route.h"
#include "qccl/codec/codec.h"
#include "qccl/common/config.h"
#include "qccl/transport/transport.h"

namespace qccl::algo {

// One all_reduce call: its tensors, how each is routed (BucketedAllreduce::route), its op.
struct AllreduceCall {
  std::vector<at::Tensor> tensors;
  std::vector<Route> routes;
  c10d::ReduceOp op;
};

class BucketedAllreduce {
 public:
  // `ranks`: the group's size, which every allreduce spans.
  BucketedAllreduce(const Config& config, int ranks);

  // How `tensor` will be reduced. Decided on the caller's thread from shared facts only
  // (dtype, size, op, config, world size, whether the caller is inside qccl.exact()), so
  // every rank decides the same.
  Route route(const at::Tensor& tensor, const c10d::ReduceOp& op, bool forcedExact) const;

  // Reduces a bucket of same-dtype tensors exactly: through Gloo with qccl's reduce-op
  // lowering for CPU tensors, through NCCL itself for CUDA ones.
  using ExactReduce = std::function<void(std::vector<at::Tensor>& bucket, const c10d::ReduceOp& op)>;

  // Reduces `tensors` (all on one device, which `net` serves) in place; routes[i] is
  // route(tensors[i], ...). Compressed buckets run on that device: on CUDA, kernels go
  // to the current stream. With `nodes` (CPU groups on several nodes) they run
  // hierarchically (hierarchical.h).
  void run(
      Transport& net,
      std::vector<at::Tensor>& tensors,
      const std::vector<Route>& routes,
      const c10d::ReduceOp& op,
      const ExactReduce& exact,
      const NodeTransports* nodes = nullptr);

  // Reduces several calls' tensors, as run() would one call after the other, bit for bit
  // (the same buckets, seeds and residuals), but with every compressed bucket in one chunk
  // pipeline (compressedAllreduce of several jobs), after the exact buckets.
  void run(Transport& net, std::vector<AllreduceCall>& calls, const ExactReduce& exact,
           const NodeTransports* nodes = nullptr);

  StatsSnapshot stats() const {
    return stats_.snapshot();
  }
  void resetStats() {
    stats_.reset();
  }
  void saveInto(CompressionState& state) const;
  void loadFrom(const CompressionState& state);

 private:
  // A compressed bucket's float32 buffer, with its seed and error-feedback residual (of
  // this rank's piece of the bucket when it runs hierarchically across `nodes`).
  CompressedJob compressedJob(
      const std::vector<at::Tensor>& tensors,
      bool average,
      const NodeTransports* nodes,
      StatsSnapshot& stats);

  const Config config_;
  const int ranks_;
  std::unique_ptr<codec::Codec> codec_;  // null for codec "none"
  std::atomic<int64_t> calls_{0};
  ResidualStore residuals_;
  CompressionStats stats_;
};

} // namespace qccl::algo
