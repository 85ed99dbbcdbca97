#include "qccl/algo/exact_allreduce.h"

#include "qccl/algo/collectives.h"

namespace qccl::algo {

std::optional<StartedTransfer> exactAllreduce(
    GlooTransport& net,
    std::vector<at::Tensor>& bucket,
    const c10d::ReduceOp& op,
    bool mayLeaveRunning,
    OneHost* oneHost) {
  if (bucket.size() > 1) {
    allreduceCoalesced(net, bucket, op, oneHost);
    return std::nullopt;
  }
  if (oneHost) {
    oneHost->allreduce(bucket[0], op);
    return std::nullopt;
  }
  if (mayLeaveRunning) {
    return startAllreduce(net, bucket[0], op);
  }
  allreduce(net, bucket[0], op);
  return std::nullopt;
}

void nativeAllreduce(Transport& net, std::vector<at::Tensor>& bucket, const c10d::ReduceOp& op) {
  c10::intrusive_ptr<c10d::Work> work;
  if (bucket.size() == 1) {
    c10d::AllreduceOptions options;
    options.reduceOp = op;
    work = net.backend().allreduce(bucket, options);
  } else {
    c10d::AllreduceCoalescedOptions options;
    options.reduceOp = op;
    work = net.backend().allreduce_coalesced(bucket, options);
  }
  net.waitFor(work, "all_reduce (exact part)");
}

} // namespace qccl::algo
