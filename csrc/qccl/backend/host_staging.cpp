#include "qccl/backend/host_staging.h"

#include <c10/core/DeviceGuard.h>

#include "qccl/backend/work.h"

namespace qccl {

at::Tensor HostStaging::reads(const at::Tensor& tensor) {
  // A synchronous copy: it waits for the current stream, then for the copy itself.
  return toHost_ ? tensor.to(at::kCPU) : tensor;
}

at::Tensor HostStaging::writes(const at::Tensor& tensor) {
  if (!toHost_) {
    return tensor;
  }
  auto host = tensor.to(at::kCPU);
  written_.push_back(tensor);
  hostCopies_.push_back(host);
  return host;
}

std::vector<at::Tensor> HostStaging::reads(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) {
    out.push_back(reads(t));
  }
  return out;
}

std::vector<at::Tensor> HostStaging::writes(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) {
    out.push_back(writes(t));
  }
  return out;
}

std::vector<std::vector<at::Tensor>> HostStaging::reads(const std::vector<std::vector<at::Tensor>>& lists) {
  std::vector<std::vector<at::Tensor>> out;
  for (const auto& list : lists) {
    out.push_back(reads(list));
  }
  return out;
}

std::vector<std::vector<at::Tensor>> HostStaging::writes(const std::vector<std::vector<at::Tensor>>& lists) {
  std::vector<std::vector<at::Tensor>> out;
  for (const auto& list : lists) {
    out.push_back(writes(list));
  }
  return out;
}

c10::intrusive_ptr<c10d::Work> HostStaging::finish(const c10::intrusive_ptr<c10d::Work>& inner) {
  if (!toHost_) {
    return inner;
  }
  auto outer = c10::make_intrusive<FutureWork>(rank_, inner->retrieveOpType(), "staged through host memory", written_);
  // Runs on the thread that completes the host call (qccl's worker or a p2p listener).
  inner->getFuture()->addCallback([outer, written = written_, host = hostCopies_](c10::ivalue::Future& done) {
    if (done.hasError()) {
      outer->markFailed(done.exception_ptr());
      return;
    }
    try {
      for (size_t i = 0; i < written.size(); ++i) {
        c10::DeviceGuard guard(written[i].device());
        written[i].copy_(host[i]);  // synchronous: the data is on the GPU when it returns
      }
      outer->markSucceeded();
    } catch (...) {
      outer->markFailed(std::current_exception());
    }
  });
  return outer;
}

} // namespace qccl
