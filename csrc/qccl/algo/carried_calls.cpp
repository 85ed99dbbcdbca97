#include "qccl/algo/carried_calls.h"

#include <ATen/ops/empty.h>

#include "qccl/algo/gloo_ring_order.h"
#include "qccl/algo/local_allreduce.h"
#include "qccl/common/tensor_bytes.h"

namespace qccl::algo {
namespace {

// What every carried call needs: CPU tensors it can read and write as bytes in place, and
// a contribution that fits the check's room.
bool fits(const std::vector<at::Tensor>& tensors, int64_t contributionBytes, int worldSize) {
  for (const auto& t : tensors) {
    if (!t.is_cpu() || !t.is_contiguous() || t.layout() != at::kStrided) {
      return false;
    }
  }
  return worldSize > 1 && contributionBytes <= inlineBytesPerCheck(worldSize);
}

} // namespace

std::shared_ptr<CarriedBroadcast> CarriedBroadcast::ifEligible(const at::Tensor& tensor, int64_t root, int worldSize) {
  if (!fits({tensor}, byteSize(tensor), worldSize)) {
    return nullptr;
  }
  return std::shared_ptr<CarriedBroadcast>(new CarriedBroadcast(tensor, root));
}

at::Tensor CarriedBroadcast::contribution() const {
  return asBytes(tensor_);  // only the root's is used; every rank's has its size
}

void CarriedBroadcast::finishFrom(const std::vector<at::Tensor>& contributions) {
  asBytes(tensor_).copy_(contributions[root_]);
}

std::shared_ptr<CarriedAllgather> CarriedAllgather::ifEligible(
    const at::Tensor& output,
    const at::Tensor& input,
    int worldSize) {
  if (!fits({output, input}, byteSize(input), worldSize)) {
    return nullptr;
  }
  return std::shared_ptr<CarriedAllgather>(new CarriedAllgather(output, input));
}

at::Tensor CarriedAllgather::contribution() const {
  return asBytes(input_);
}

void CarriedAllgather::finishFrom(const std::vector<at::Tensor>& contributions) {
  auto out = asBytes(output_);
  const int64_t part = byteSize(input_);
  for (size_t r = 0; r < contributions.size(); ++r) {
    out.narrow(0, static_cast<int64_t>(r) * part, part).copy_(contributions[r]);
  }
}

std::shared_ptr<CarriedReduceScatter> CarriedReduceScatter::ifEligible(
    const at::Tensor& output,
    const at::Tensor& input,
    const c10d::ReduceOp& op,
    int rank,
    int worldSize) {
  auto lowered = lowerReduction(op, input.scalar_type(), "reduce_scatter");
  if (!fits({output, input}, wireBytes(lowered, input), worldSize) ||
      !reducesAsGloo(lowered.wireOp, lowered.wireType)) {
    return nullptr;
  }
  return std::shared_ptr<CarriedReduceScatter>(
      new CarriedReduceScatter(output, input, std::move(lowered), rank, worldSize));
}

at::Tensor CarriedReduceScatter::contribution() const {
  return asBytes(toWire(lowered_, input_).contiguous());
}

void CarriedReduceScatter::finishFrom(const std::vector<at::Tensor>& contributions) {
  const auto type = lowered_.wireType;
  const auto elementSize = static_cast<int64_t>(c10::elementSize(type));
  const int64_t whole = contributions[0].numel();
  const int64_t block = whole / worldSize_;
  auto wireOut = at::empty({block}, at::kByte);
  std::vector<const uint8_t*> fromRank;
  for (const auto& bytes : contributions) {
    fromRank.push_back(bytePointer(bytes) + rank_ * block);
  }
  // The whole input's chunks, as Gloo all-reduces it and keeps this rank's block.
  reduceInGlooOrder(
      lowered_.wireOp, type, mutableBytePointer(wireOut), rank_ * block / elementSize, block,
      fromRank, glooAllreduceChunkElements(whole / elementSize, elementSize, worldSize_));
  fromWire(lowered_, wireOut.view(type), output_, worldSize_);
}

} // namespace qccl::algo
