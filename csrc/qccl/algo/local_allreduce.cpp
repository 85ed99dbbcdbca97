#include "qccl/algo/local_allreduce.h"

#include <algorithm>


#include "qccl/common/tensor_bytes.h"

namespace qccl::algo {
namespace {

using R = c10d::ReduceOp::RedOpType;

bool orderIndependent(R op, at::ScalarType wireType, int worldSize) {
  const bool integral = at::isIntegralType(wireType, /*includeBool=*/true);
  switch (op) {
    case R::BAND:
    case R::BOR:
    case R::BXOR:
      return true;
    case R::MIN:
    case R::MAX:
      return integral;  // floats: NaN handling would depend on the order
    case R::SUM:
    case R::PRODUCT:
      return integral || worldSize == 2;
    default:
      return false;
  }
}

} // namespace

int64_t inlineBytesPerCheck(int worldSize) {
  constexpr int64_t kReceivedPerCheck = 64 << 10;
  constexpr int64_t kLeast = 64;
  const int64_t share = kReceivedPerCheck / std::max(worldSize - 1, 1) / 8 * 8;
  return std::clamp(share, kLeast, kMaxInlineBytes);
}

std::shared_ptr<LocalAllreduce> LocalAllreduce::ifEligible(
    const at::Tensor& tensor,
    const c10d::ReduceOp& op,
    int worldSize) {
  if (!tensor.is_cpu() || worldSize < 2) {
    return nullptr;
  }
  auto lowered = lowerReduction(op, tensor.scalar_type(), "all_reduce");
  const int64_t bytes = tensor.numel() * static_cast<int64_t>(c10::elementSize(lowered.wireType)) *
      (lowered.viewComplexAsReal ? 2 : 1);
  if (bytes > inlineBytesPerCheck(worldSize) || !orderIndependent(lowered.wireOp, lowered.wireType, worldSize)) {
    return nullptr;
  }
  return std::shared_ptr<LocalAllreduce>(new LocalAllreduce(tensor, std::move(lowered), worldSize));
}

LocalAllreduce::LocalAllreduce(const at::Tensor& tensor, LoweredReduction lowered, int worldSize)
    : tensor_(tensor), lowered_(std::move(lowered)), worldSize_(worldSize) {}

at::Tensor LocalAllreduce::contribution() const {
  return asBytes(toWire(lowered_, tensor_).contiguous());
}

void LocalAllreduce::received(std::vector<at::Tensor> contributions) {
  contributions_ = std::move(contributions);
}

void LocalAllreduce::finish() {
  auto as = [&](const at::Tensor& bytes) { return bytes.view(lowered_.wireType); };
  at::Tensor acc = as(contributions_[0]).clone();
  for (size_t r = 1; r < contributions_.size(); ++r) {
    reduceInto(lowered_.wireOp, acc, as(contributions_[r]));
  }
  contributions_.clear();
  fromWire(lowered_, acc, tensor_, worldSize_);
}

} // namespace qccl::algo
