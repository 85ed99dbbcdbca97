#include "qccl/backend/op_signatures.h"

#include <c10/util/hash.h>

#include "qccl/common/tensor_bytes.h"

namespace qccl {

OpSignature signatureOf(c10d::OpType op, const at::Tensor& t, int64_t reduceOp, int64_t root) {
  OpSignature s;
  s.op = op;
  s.dtype = static_cast<int64_t>(t.scalar_type());
  s.elements = t.numel();
  s.reduceOp = reduceOp;
  s.root = root;
  return s;
}

OpSignature signatureOfList(c10d::OpType op, const std::vector<at::Tensor>& ts, int64_t reduceOp) {
  OpSignature s;
  s.op = op;
  for (const auto& t : ts) {
    s.elements += byteSize(t);
  }
  s.reduceOp = reduceOp;
  s.layoutHash = layoutHash(ts);
  return s;
}

int64_t redOp(const c10d::ReduceOp& op) {
  return static_cast<int64_t>(op.op_);
}

int64_t routePlan(const std::vector<algo::Route>& routes) {
  size_t plan = 0;
  for (auto route : routes) {
    plan = c10::hash_combine(plan, static_cast<size_t>(route) + 1);
  }
  return static_cast<int64_t>(plan & 0x7fffffffffffffffULL);
}

} // namespace qccl
