#pragma once

// What NCCL reduces itself. Anything else on CUDA tensors is staged through the host,
// where qccl's lowering (algo/reduce_lowering.h) serves every pair OpChecker accepts.

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

namespace qccl {

inline bool ncclReduces(const c10d::ReduceOp& op, at::ScalarType dtype) {
  using R = c10d::ReduceOp::RedOpType;
  const bool opOk = op.op_ == R::SUM || op.op_ == R::AVG || op.op_ == R::PRODUCT || op.op_ == R::MIN ||
      op.op_ == R::MAX || op.op_ == R::PREMUL_SUM;
  const bool typeOk = dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16 ||
      dtype == at::kChar || dtype == at::kByte || dtype == at::kInt || dtype == at::kLong;
  return opOk && typeOk;
}

} // namespace qccl
