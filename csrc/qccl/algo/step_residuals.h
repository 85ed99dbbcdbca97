#pragma once

// Error-feedback state of compressed reduce-scatters. FSDP2 allocates a new reduce-scatter
// buffer for every call, so a residual cannot follow its buffer as a DDP bucket's does
// (residual_store.h). It follows the call's place in the training step instead: FSDP
// reduce-scatters its parameter groups in the same order every backward, so the k-th
// reduce-scatter of a step reduces the same gradients as the k-th of the step before.
// A step starts at markStep() (qccl.mark_step(), which qccl calls after every
// torch.optim optimizer step); the places of a step are counted on the caller's thread,
// in the order of the calls. Memory is bounded: beyond maxBytes a call keeps no residual.

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include <ATen/core/Tensor.h>

namespace qccl::algo {

// Starts a new training step for every group of the process.
void markStep();

class StepResiduals {
 public:
  explicit StepResiduals(int64_t maxBytes) : maxBytes_(maxBytes) {}

  // The place in the current step of the call being issued.
  int64_t nextPlace();

  // The residual of the call at `place` (numel float32 elements on `device`): the one
  // that place left last step, zeros for a new one, undefined beyond the memory bound.
  at::Tensor lookup(int64_t place, int64_t numel, const c10::Device& device);

  void save(std::vector<int64_t>& places, std::vector<at::Tensor>& residuals) const;
  void load(const std::vector<int64_t>& places, const std::vector<at::Tensor>& residuals);

 private:
  const int64_t maxBytes_;
  std::atomic<uint64_t> stepSeen_{0};
  std::atomic<int64_t> place_{0};
  mutable std::mutex mutex_;
  std::map<int64_t, at::Tensor> residuals_;
  int64_t bytes_ = 0;
};

} // namespace qccl::algo
