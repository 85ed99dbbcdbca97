// The coalescing window (batch_isend_irecv, _coalescing_manager): the ops issued in it
// are covered by one Work; NCCL's own window opens with the first CUDA op (cuda_route.cpp).

#include "qccl/backend/process_group_qccl.h"
#include "qccl/common/errors.h"

namespace qccl {

using WorkPtr = c10::intrusive_ptr<c10d::Work>;

void ProcessGroupQCCL::startCoalescing() {
  std::lock_guard<std::mutex> lock(coalescingMutex_);
  QCCL_CHECK_VALUE(!coalescing_, "start_coalescing on rank ", rank_, ": a coalescing window is already open");
  coalescing_ = true;
}

WorkPtr ProcessGroupQCCL::endCoalescing() {
  std::vector<WorkPtr> parts;
  {
    std::lock_guard<std::mutex> lock(coalescingMutex_);
    QCCL_CHECK_VALUE(coalescing_, "end_coalescing on rank ", rank_, ": no coalescing window is open");
    coalescing_ = false;
    parts.swap(coalesced_);
  }
  if (ncclCoalescing_.exchange(false)) {
    c10::intrusive_ptr<c10d::Work> grouped;
    try {
      grouped = nccl_->endCoalescing();
    } catch (...) {
      ncclP2P_.batchEnded(nullptr);
      throw;
    }
    ncclP2P_.batchEnded(grouped);
    if (grouped) {
      parts.push_back(grouped);
    }
  }
  return BatchWork::create(rank_, std::move(parts));
}

void ProcessGroupQCCL::abandonCoalescing() {
  {
    std::lock_guard<std::mutex> lock(coalescingMutex_);
    if (!coalescing_) {
      return;
    }
  }
  // Ends the window as endCoalescing() would (NCCL's too, or its grouped ops would never
  // be issued); nobody waits on the batch, each op keeps its own Work and errors.
  endCoalescing();
}

WorkPtr ProcessGroupQCCL::track(WorkPtr work) {
  std::lock_guard<std::mutex> lock(coalescingMutex_);
  if (coalescing_ && work) {
    coalesced_.push_back(work);
  }
  return work;
}

} // namespace qccl
