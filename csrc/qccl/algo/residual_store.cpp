#include "qccl/algo/residual_store.h"

#include <ATen/ops/zeros.h>
#include <c10/util/hash.h>

namespace qccl::algo {
namespace {

int64_t bytesOf(const at::Tensor& t) {
  return t.numel() * static_cast<int64_t>(sizeof(float));
}

} // namespace

at::Tensor ResidualStore::lookup(uint64_t key, int64_t numel, const c10::Device& device) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->key == key && it->residual.numel() == numel && it->residual.device() == device) {
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
  entries_.push_back({key, residual});
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
    out.push_back(entry.residual.clone());
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

uint64_t bucketKey(const std::vector<at::Tensor>& tensors) {
  size_t h = 0;
  for (const auto& t : tensors) {
    h = c10::hash_combine(h, reinterpret_cast<size_t>(t.data_ptr()));
    h = c10::hash_combine(h, static_cast<size_t>(t.numel()));
  }
  return h;
}

} // namespace qccl::algo
