#pragma once

// Gloo reduces only some dtypes with only some ops: no AVG for integers, no PREMUL_SUM at
// all, no int16, no complex. qccl "lowers" every (ReduceOp, dtype) pair that makes sense to
// an op Gloo can run on a dtype Gloo knows, plus a local pre-scale and post-division.
// Pairs that make no sense (BAND on floats, AVG on bool, ...) are rejected with a TypeError,
// as NCCL and Gloo reject them.

#include <optional>
#include <string>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

namespace qccl {

struct LoweredReduction {
  c10d::ReduceOp::RedOpType wireOp = c10d::ReduceOp::SUM;  // what Gloo applies
  at::ScalarType wireType = at::kFloat;                    // what Gloo sees
  bool reinterpret = false;        // wireType is a same-size view (bool as uint8), not a copy
  bool viewComplexAsReal = false;  // complex reduces as pairs of reals
  std::optional<at::Tensor> premulFactor;  // multiply every contribution first (PREMUL_SUM)
  bool divideByWorldSize = false;          // AVG: sum, then divide
};

// Throws a qccl TypeError naming `opName` when the pair is not reducible.
LoweredReduction lowerReduction(
    const c10d::ReduceOp& op,
    at::ScalarType dtype,
    const std::string& opName);

// The tensor to hand Gloo for `input`: `input` itself when no conversion is needed (so
// Gloo works in place), otherwise a new converted, pre-scaled tensor.
at::Tensor toWire(const LoweredReduction& lowered, const at::Tensor& input);

// The bytes of toWire(lowered, input), without making it.
int64_t wireBytes(const LoweredReduction& lowered, const at::Tensor& input);

// Turns Gloo's reduced `wire` tensor (any shape with the right element count) into the
// final result in `output`, which `wire` may alias.
void fromWire(const LoweredReduction& lowered, const at::Tensor& wire, at::Tensor& output, int worldSize);

std::string reduceOpName(c10d::ReduceOp::RedOpType op);

// acc = acc <op> next, elementwise and in place, for a wire op (what lowerReduction
// gives): the reductions qccl runs itself, always in a fixed order of ranks.
void reduceInto(c10d::ReduceOp::RedOpType op, at::Tensor& acc, const at::Tensor& next);

} // namespace qccl
