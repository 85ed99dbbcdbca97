#include "qccl/algo/residual_store.h"

#include <ATen/ops/zeros.h>

namespace qccl::algo {
namespace {

int64_t bytesOf(const at::Tensor& t) {
  return t.numel() * static_cast<int64_t>(sizeof(float));
}

} // namespace

std::vector<ResidualStore::Member> ResidualStore::membersOf(const std::vector<at::Tensor>& tensors) {
  std::vector<Member> members;
  for (const auto& t : tensors) {
    members.push_back({t.data_ptr(), t.numel(), t.storage().getWeakStorageImpl()});
  }
  return members;
}

bool ResidualStore::Entry::isBucketOf(const std::vector<at::Tensor>& tensors) const {
  if (bucket.size() != tensors.size()) {
    return false;
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    // The weak reference keeps the StorageImpl object (not its memory) allocated, so no
    // other storage can have its address: equal pointers mean the same, live, storage.
    if (bucket[i].data != tensors[i].data_ptr() || bucket[i].numel != tensors[i].numel() ||
        bucket[i].storage._unsafe_get_target() != tensors[i].storage().unsafeGetStorageImpl()) {
      return false;
    }
  }
  return true;
}

bool ResidualStore::Entry::bucketFreed() const {
  for (const auto& member : bucket) {
    if (member.storage.expired()) {
      return true;
    }
  }
  return false;
}

void ResidualStore::dropFreedBuckets() {
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->bucketFreed()) {
      bytes_ -= bytesOf(it->residual);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
}

at::Tensor ResidualStore::lookup(const std::vector<at::Tensor>& tensors, int64_t numel, const c10::Device& device) {
  std::lock_guard<std::mutex> lock(mutex_);
  dropFreedBuckets();
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->isBucketOf(tensors) && it->residual.numel() == numel && it->residual.device() == device) {
      entries_.splice(entries_.end(), entries_, it);  // now the most recently used
      return entries_.back().residual;
    }
  }
  at::Tensor residual;
  for (auto it = unbound_.begin(); it != unbound_.end(); ++it) {
    if (it->numel() == numel) {
      residual = it->to(device);  // a checkpoint's residuals load on the CPU
      unbound_.erase(it);
      break;
    }
  }
  if (!residual.defined()) {
    residual = at::zeros({numel}, at::TensorOptions().dtype(at::kFloat).device(device));
  } else {
    bytes_ -= bytesOf(residual);  // counted while unbound
  }
  entries_.push_back({membersOf(tensors), residual});
  bytes_ += bytesOf(residual);
  evictBeyondCap();
  return residual;
}

void ResidualStore::evictBeyondCap() {
  // Unbound residuals go first (they may never find their bucket), then the least
  // recently used; the entry just looked up (the last) always stays.
  while (bytes_ > maxBytes_ && !unbound_.empty()) {
    bytes_ -= bytesOf(unbound_.front());
    unbound_.pop_front();
  }
  while (bytes_ > maxBytes_ && entries_.size() > 1) {
    bytes_ -= bytesOf(entries_.front().residual);
    entries_.pop_front();
  }
}

std::vector<at::Tensor> ResidualStore::save() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<at::Tensor> out;
  for (const auto& t : unbound_) {
    out.push_back(t.clone());
  }
  for (const auto& entry : entries_) {
    if (!entry.bucketFreed()) {  // a freed bucket's residual is stale
      out.push_back(entry.residual.clone());
    }
  }
  return out;
}

void ResidualStore::load(const std::vector<at::Tensor>& residuals) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.clear();
  unbound_.clear();
  bytes_ = 0;
  for (const auto& t : residuals) {
    unbound_.push_back(t.to(at::kFloat).contiguous().reshape({-1}).clone());
    bytes_ += bytesOf(unbound_.back());
  }
}

} // namespace qccl::algo
