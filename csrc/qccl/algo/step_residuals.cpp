#include "qccl/algo/step_residuals.h"

#include <ATen/ops/zeros.h>

namespace qccl::algo {
namespace {

std::atomic<uint64_t> currentStep{0};

int64_t bytesOf(const at::Tensor& t) {
  return t.numel() * static_cast<int64_t>(sizeof(float));
}

} // namespace

void markStep() {
  currentStep.fetch_add(1);
}

int64_t StepResiduals::nextPlace() {
  const uint64_t step = currentStep.load();
  if (stepSeen_.exchange(step) != step) {
    place_.store(0);
  }
  return place_.fetch_add(1);
}

at::Tensor StepResiduals::lookup(int64_t place, int64_t numel, const c10::Device& device) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = residuals_.find(place);
  if (it != residuals_.end()) {
    if (it->second.numel() == numel) {
      if (it->second.device() != device) {
        it->second = it->second.to(device);  // a checkpoint's residuals load on the CPU
      }
      return it->second;
    }
    bytes_ -= bytesOf(it->second);  // this place reduces something else now
    residuals_.erase(it);
  }
  if (bytes_ + numel * static_cast<int64_t>(sizeof(float)) > maxBytes_) {
    return {};
  }
  auto residual = at::zeros({numel}, at::TensorOptions().dtype(at::kFloat).device(device));
  residuals_.emplace(place, residual);
  bytes_ += bytesOf(residual);
  return residual;
}

void StepResiduals::save(std::vector<int64_t>& places, std::vector<at::Tensor>& residuals) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [place, residual] : residuals_) {
    places.push_back(place);
    residuals.push_back(residual.clone());
  }
}

void StepResiduals::load(const std::vector<int64_t>& places, const std::vector<at::Tensor>& residuals) {
  std::lock_guard<std::mutex> lock(mutex_);
  residuals_.clear();
  bytes_ = 0;
  for (size_t i = 0; i < places.size() && i < residuals.size(); ++i) {
    auto residual = residuals[i].to(at::kFloat).contiguous().reshape({-1}).clone();
    bytes_ += bytesOf(residual);
    residuals_[places[i]] = residual;
  }
}

} // namespace qccl::algo
