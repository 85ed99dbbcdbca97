#include "qccl/algo/local_allreduce.h"

#include <ATen/ops/empty_like.h>

#include "qccl/algo/gloo_ring_order.h"
#include "qccl/common/tensor_bytes.h"

namespace qccl::algo {

bool reducesAsGloo(c10d::ReduceOp::RedOpType op, at::ScalarType wireType) {
  using R = c10d::ReduceOp::RedOpType;
  switch (op) {
    case R::BAND:
    case R::BOR:
    case R::BXOR:
    case R::SUM:
    case R::PRODUCT:
      return true;
    case R::MIN:
    case R::MAX:
      // Floats: how a NaN spreads is Gloo's element kernel's, which at::minimum is not.
      return at::isIntegralType(wireType, /*includeBool=*/true);
    default:
      return false;
  }
}

std::shared_ptr<LocalAllreduce> LocalAllreduce::ifEligible(
    const at::Tensor& tensor,
    const c10d::ReduceOp& op,
    int worldSize) {
  if (!tensor.is_cpu() || worldSize < 2) {
    return nullptr;
  }
  auto lowered = lowerReduction(op, tensor.scalar_type(), "all_reduce");
  if (wireBytes(lowered, tensor) > inlineBytesPerCheck(worldSize) || !reducesAsGloo(lowered.wireOp, lowered.wireType)) {
    return nullptr;
  }
  return std::shared_ptr<LocalAllreduce>(new LocalAllreduce(tensor, std::move(lowered), worldSize));
}

LocalAllreduce::LocalAllreduce(const at::Tensor& tensor, LoweredReduction lowered, int worldSize)
    : tensor_(tensor), lowered_(std::move(lowered)), worldSize_(worldSize) {}

at::Tensor LocalAllreduce::contribution() const {
  return asBytes(toWire(lowered_, tensor_).contiguous());
}

void LocalAllreduce::finishFrom(const std::vector<at::Tensor>& contributions) {
  auto acc = at::empty_like(contributions[0]);
  std::vector<const uint8_t*> fromRank;
  for (const auto& bytes : contributions) {
    fromRank.push_back(bytePointer(bytes));
  }
  const auto elementSize = static_cast<int64_t>(c10::elementSize(lowered_.wireType));
  const int64_t count = acc.numel() / elementSize;
  reduceInGlooOrder(
      lowered_.wireOp, lowered_.wireType, mutableBytePointer(acc), 0, acc.numel(), fromRank,
      glooAllreduceChunkElements(count, elementSize, worldSize_));
  fromWire(lowered_, acc.view(lowered_.wireType), tensor_, worldSize_);
}

} // namespace qccl::algo
