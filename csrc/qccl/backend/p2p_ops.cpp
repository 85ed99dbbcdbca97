// send, recv and receive-from-any-source: CPU tensors through qccl's point-to-point
// engine (p2p/p2p_engine.h); CUDA tensors through NCCL (compressed payloads,
// p2p/inner_backend_p2p.h) or staged through host memory into the same engine.

#include "qccl/backend/process_group_qccl.h"
#include "qccl/common/errors.h"

namespace qccl {

using WorkPtr = c10::intrusive_ptr<c10d::Work>;

bool ProcessGroupQCCL::travelsOnNccl(const at::Tensor& tensor) const {
  return tensor.is_cuda() && nccl_ && cudaGoesToNccl(/*needsHost=*/false);
}

void ProcessGroupQCCL::checkPeer(const OpChecker& check, const at::Tensor& tensor, int peer) {
  if (peer != rank_ || !travelsOnNccl(tensor)) {
    check.peer(peer);
    return;
  }
  std::lock_guard<std::mutex> lock(coalescingMutex_);
  QCCL_CHECK_VALUE(
      coalescing_, "rank ", rank_, " can send to or receive from itself only inside batch_isend_irecv, "
      "where NCCL pairs the send with the receive");
}

// Over NCCL, through ncclP2P_ (compressed payloads, settings compared per peer); staged
// through host memory, through the CPU engine (p2p_), like CPU tensors.
WorkPtr ProcessGroupQCCL::send(std::vector<at::Tensor>& tensors, int dstRank, int tag) {
  OpChecker check("send", rank_, size_);
  auto tensor = check.single(tensors);
  check.contiguous(tensor, "the tensor");
  checkPeer(check, tensor, dstRank);
  if (tensor.is_cuda() && cudaGoesToNccl(/*needsHost=*/false)) {
    return onNccl("send", std::nullopt, [&](c10d::Backend& nccl) { return ncclP2P_.send(nccl, tensor, dstRank, tag); });
  }
  CallStaging staging(CallStaging::modeFor(tensor.is_cuda(), false), rank_);
  return track(staging.finish(p2p_.send(staging.reads(tensor), dstRank, tag)));
}

WorkPtr ProcessGroupQCCL::recv(std::vector<at::Tensor>& tensors, int srcRank, int tag) {
  OpChecker check("recv", rank_, size_);
  auto tensor = check.single(tensors);
  check.contiguous(tensor, "the tensor");
  checkPeer(check, tensor, srcRank);
  if (tensor.is_cuda() && cudaGoesToNccl(/*needsHost=*/false)) {
    return onNccl("recv", std::nullopt, [&](c10d::Backend& nccl) { return ncclP2P_.recv(nccl, tensor, srcRank, tag); });
  }
  CallStaging staging(CallStaging::modeFor(tensor.is_cuda(), false), rank_);
  return track(staging.finish(p2p_.recv(staging.writes(tensor), srcRank, tag)));
}

WorkPtr ProcessGroupQCCL::recvAnysource(std::vector<at::Tensor>& tensors, int tag) {
  OpChecker check("recv", rank_, size_);
  auto tensor = check.single(tensors);
  check.contiguous(tensor, "the tensor");
  // NCCL has no receive from any source: CUDA tensors are staged through the host into
  // qccl's p2p engine, which has.
  CallStaging staging(CallStaging::modeFor(tensor.is_cuda(), false), rank_);
  return track(staging.finish(p2p_.recv(staging.writes(tensor), -1, tag)));
}

} // namespace qccl
