#pragma once

// Error-feedback state: per fused bucket, the float32 residual of what the encoders
// dropped last time, added back before the next encode (docs/algorithms.md).
//
// A bucket is keyed by the addresses and sizes of its tensors: DDP reduces the same
// bucket buffers every step, so each bucket finds its own residual again. Memory is
// bounded: beyond maxBytes the least recently used residuals are dropped.
//
// Checkpoints: save() lists the residuals, least recently used first; after load() they
// wait unbound, and the first bucket of matching size that misses takes the first one
// left. A resumed job reduces its buckets in the same order, so each gets its own back.

#include <cstdint>
#include <list>
#include <mutex>
#include <vector>

#include <ATen/core/Tensor.h>

namespace qccl::algo {

class ResidualStore {
 public:
  explicit ResidualStore(int64_t maxBytes) : maxBytes_(maxBytes) {}

  // The residual of bucket `key` (numel float32 elements on `device`, the bucket's):
  // zeros for a new bucket. Valid until the next lookup().
  at::Tensor lookup(uint64_t key, int64_t numel, const c10::Device& device);

  std::vector<at::Tensor> save() const;
  // Replaces the state with `residuals` (as save() returned them).
  void load(const std::vector<at::Tensor>& residuals);

 private:
  struct Entry {
    uint64_t key;
    at::Tensor residual;
  };
  void evictBeyondCap();

  const int64_t maxBytes_;
  mutable std::mutex mutex_;
  std::list<Entry> entries_;          // least recently used first
  std::list<at::Tensor> unbound_;     // loaded, waiting for their bucket
  int64_t bytes_ = 0;
};

// Key of a bucket made of `tensors`.
uint64_t bucketKey(const std::vector<at::Tensor>& tensors);

} // namespace qccl::algo
