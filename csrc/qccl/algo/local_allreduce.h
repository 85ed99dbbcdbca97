#pragma once

// A small exact all_reduce that travels with its cross-rank check (carried_call.h).
//
// Only where the result is bit for bit what Gloo's allreduce gives: each rank reduces in
// the order of Gloo's ring (gloo_ring_order.h), which makes sums and products of every
// type Gloo's at any world size; bitwise ops and MIN/MAX of integers are exact in any
// order. Floating-point MIN/MAX stay with Gloo (how a NaN spreads is its kernel's).

#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include "qccl/algo/carried_call.h"
#include "qccl/algo/reduce_lowering.h"

namespace qccl::algo {

// Whether reducing every rank's contribution in the order of Gloo's ring gives Gloo's
// bits for `op` on elements of `wireType` (the lowered op and type, reduce_lowering.h).
bool reducesAsGloo(c10d::ReduceOp::RedOpType op, at::ScalarType wireType);

class LocalAllreduce : public CarriedCall {
 public:
  // Null unless an exact all_reduce of `tensor` with `op` qualifies.
  static std::shared_ptr<LocalAllreduce> ifEligible(const at::Tensor& tensor, const c10d::ReduceOp& op, int worldSize);

  at::Tensor contribution() const override;

 private:
  void finishFrom(const std::vector<at::Tensor>& contributions) override;
  LocalAllreduce(const at::Tensor& tensor, LoweredReduction lowered, int worldSize);

  at::Tensor tensor_;
  LoweredReduction lowered_;
  int worldSize_;
};

} // namespace qccl::algo
