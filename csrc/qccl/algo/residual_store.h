#pragma once

// Error-feedback state: per fused bucket, the float32 residual of what the encoders
// dropped last time, added back before the next encode (docs/algorithms.md).
//
// A residual belongs to its bucket's tensors while they live: the same addresses and
// sizes, over the same storages, which the store holds by weak reference. DDP reduces the
// same bucket buffers every step, so each bucket finds its own residual again. When a
// bucket's storage is freed (DDP frees its first step's bucket when it rebuilds its
// buckets), the residual is stale: it is dropped, and never handed to a buffer that a
// later allocation places at the freed address. A tensor allocated anew for every call
// therefore starts from a zero residual each time. Memory is bounded: beyond maxBytes the
// least recently used residuals are dropped.
//
// Checkpoints: save() lists the residuals of live buckets, least recently used first, so
// in the order of the last step's calls. After load() they wait unbound, and a bucket
// that has no residual takes the first one left of its size: a resumed job reduces its
// buckets in the same order, so each gets its own back.

#include <cstdint>
#include <list>
#include <mutex>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/StorageImpl.h>
#include <c10/util/intrusive_ptr.h>

namespace qccl::algo {

class ResidualStore {
 public:
  explicit ResidualStore(int64_t maxBytes) : maxBytes_(maxBytes) {}

  // The residual of the bucket made of `tensors` (numel float32 elements on `device`, the
  // bucket's): zeros for a new bucket. Valid until the next lookup().
  at::Tensor lookup(const std::vector<at::Tensor>& tensors, int64_t numel, const c10::Device& device);

  std::vector<at::Tensor> save() const;
  // Replaces the state with `residuals` (as save() returned them).
  void load(const std::vector<at::Tensor>& residuals);

 private:
  // One tensor of a bucket, as it was when the bucket was first reduced.
  struct Member {
    const void* data;
    int64_t numel;
    c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  };
  struct Entry {
    std::vector<Member> bucket;
    at::Tensor residual;

    bool isBucketOf(const std::vector<at::Tensor>& tensors) const;
    bool bucketFreed() const;
  };
  static std::vector<Member> membersOf(const std::vector<at::Tensor>& tensors);
  void dropFreedBuckets();
  void evictBeyondCap();

  const int64_t maxBytes_;
  mutable std::mutex mutex_;
  std::list<Entry> entries_;          // least recently used first
  std::list<at::Tensor> unbound_;     // loaded, waiting for their bucket
  int64_t bytes_ = 0;
};

} // namespace qccl::algo
