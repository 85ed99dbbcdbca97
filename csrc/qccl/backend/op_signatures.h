#pragma once

// The cross-rank check's record of a call (algo/agreement.h), built from c10d's
// arguments: what every rank must pass alike.

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include "qccl/algo/agreement.h"
#include "qccl/algo/route.h"

namespace qccl {

// A call on one tensor.
OpSignature signatureOf(c10d::OpType op, const at::Tensor& t, int64_t reduceOp = -1, int64_t root = -1);
// A call on a list of tensors.
OpSignature signatureOfList(c10d::OpType op, const std::vector<at::Tensor>& ts, int64_t reduceOp = -1);
// The reduce op as a signature records it.
int64_t redOp(const c10d::ReduceOp& op);
// A call's routes (exact or compressed, per tensor) as a signature's plan records them.
int64_t routePlan(const std::vector<algo::Route>& routes);

} // namespace qccl
