#pragma once

// What a checkpoint of a group's compression state holds (qccl.state_dict()).

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace qccl::algo {

struct CompressionState {
  // all-reduce (bucketed_allreduce.h)
  int64_t calls = 0;                  // compressed buckets so far (seeds stochastic rounding)
  std::vector<at::Tensor> residuals;  // error feedback, see ResidualStore
  // reduce-scatter and all-gather (sharded_compression.h)
  int64_t shardedCalls = 0;
  std::vector<int64_t> reduceScatterPlaces;        // each residual's place in the step
  std::vector<at::Tensor> reduceScatterResiduals;  // see StepResiduals
};

} // namespace qccl::algo
