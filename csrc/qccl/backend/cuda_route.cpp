// Calls on CUDA tensors: through the group's NCCL backend, or staged through host
// memory into the CPU path (docs/cuda.md). The compressed all-reduce runs its GPU
// kernels over NCCL here.

#include <algorithm>

#include <c10/core/StreamGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "qccl/algo/exact_allreduce.h"
#include "qccl/backend/nccl_capabilities.h"
#include "qccl/backend/process_group_qccl.h"
#include "qccl/common/errors.h"
#include "qccl/transport/nccl_transport.h"

namespace qccl {

using c10d::OpType;
using WorkPtr = c10::intrusive_ptr<c10d::Work>;

bool ProcessGroupQCCL::cudaGoesToNccl(bool needsHost) const {
  return !needsHost && config_.cudaTransport == Config::CudaTransport::Nccl;
}

WorkPtr ProcessGroupQCCL::onNccl(
    const std::string& name,
    const std::optional<OpSignature>& signature,
    const NcclCall& call) {
  QCCL_CHECK_SUPPORTED(
      nccl_, name, " on rank ", rank_, ": CUDA tensors travel through NCCL, and the group has no NCCL backend (this process had no GPU or no "
      "NCCL when the group was created, or a C++ program passed none to qccl::createBackend); set "
      "QCCL_CUDA_TRANSPORT=gloo to stage them through host memory");
  if (signature && config_.verifyAcrossRanks) {
    // On the worker, in order with CPU calls.
    place(name, *signature, {}, {}, [] { return std::optional<StartedTransfer>(); })->wait();
  }
  {
    // NCCL must group a batch's sends and receives, or they deadlock: the first CUDA op
    // of a coalescing window opens NCCL's window too (CPU-only batches never touch NCCL).
    std::lock_guard<std::mutex> lock(coalescingMutex_);
    if (coalescing_ && !ncclCoalescing_.exchange(true)) {
      nccl_->startCoalescing();
    }
  }
  return track(call(*nccl_));
}

WorkPtr ProcessGroupQCCL::allreduceOnCuda(
    const std::string& name,
    OpSignature signature,
    const std::vector<at::Tensor>& tensors,
    const c10d::ReduceOp& op,
    const NcclCall& nccl) {
  auto routes = routeAll(tensors, op, signature);
  const bool compressed = std::find(routes.begin(), routes.end(), algo::Route::Compressed) != routes.end();
  bool ncclCan = true;
  for (const auto& t : tensors) {
    ncclCan = ncclCan && ncclReduces(op, t.scalar_type());
  }
  if (!compressed && cudaGoesToNccl(/*needsHost=*/!ncclCan)) {
    return onNccl(name, signature, nccl);
  }
  bool batchOpen = false;
  {
    std::lock_guard<std::mutex> lock(coalescingMutex_);
    batchOpen = coalescing_;
  }
  // The GPU algorithm needs NCCL and issues several NCCL calls of its own, which an open
  // coalescing window would absorb: those cases take the host path, also compressed.
  if (!nccl_ || batchOpen || !cudaGoesToNccl(/*needsHost=*/!ncclCan)) {
    return allreduceList(name, std::move(signature), tensors, op, CallStaging::Mode::HostCopies);
  }
  const auto device = tensors[0].device();
  const c10::Stream callersStream = c10::impl::getDeviceGuardImpl(device.type())->getStream(device);
  // On the worker, in order with CPU calls: the cross-rank check, then the kernels and
  // NCCL calls, enqueued on the caller's current stream. The caller waits for the
  // enqueuing only, never for the GPU.
  place(name, std::move(signature), {}, {}, [this, ts = tensors, routes, op, callersStream]() mutable {
    c10::StreamGuard onCallersStream(callersStream);
    NcclTransport net(*nccl_);
    allreduce_.run(net, ts, routes, op, [&](std::vector<at::Tensor>& bucket, const c10d::ReduceOp& bucketOp) {
      algo::nativeAllreduce(net, bucket, bucketOp);  // ncclCan: NCCL reduces this dtype and op
    });
    return std::optional<StartedTransfer>();
  })->wait();
  return track(c10::make_intrusive<StreamWork>(rank_, OpType::ALLREDUCE, name, tensors, seq_.load()));
}

} // namespace qccl
