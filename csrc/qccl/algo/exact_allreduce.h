#pragma once

// The exact route of the all-reduce: what BucketedAllreduce::ExactReduce does with a
// bucket of same-dtype tensors it does not compress.

#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include "qccl/algo/one_host.h"
#include "qccl/transport/gloo_transport.h"
#include "qccl/transport/started_transfer.h"

namespace qccl::algo {

// Over Gloo, with qccl's reduce-op lowering (every dtype and op): one all_reduce for one
// tensor, one fused for several. When `mayLeaveRunning` (the bucket is its call's only
// transfer) a single tensor's transfer is returned instead of waited for, so the worker
// can start the next call while it is on the wire. Through `oneHost` instead when the
// group has it (done on return, with the bits the Gloo route gives).
std::optional<StartedTransfer> exactAllreduce(
    GlooTransport& net,
    std::vector<at::Tensor>& bucket,
    const c10d::ReduceOp& op,
    bool mayLeaveRunning,
    OneHost* oneHost = nullptr);

// Over a backend that reduces the dtype and op itself (NCCL: backend/nccl_capabilities.h),
// with its own all_reduce, waited for as `net` waits (on CUDA: the current stream waits).
void nativeAllreduce(Transport& net, std::vector<at::Tensor>& bucket, const c10d::ReduceOp& op);

} // namespace qccl::algo
