#include "qccl/backend/call_staging.h"

#include <c10/core/DeviceGuard.h>

#include "qccl/work/work.h"

namespace qccl {

at::Tensor CallStaging::copyOf(const at::Tensor& tensor) const {
  switch (mode_) {
    case Mode::HostCopies:
      // A synchronous copy: it waits for the current stream, then for the copy itself.
      // Contiguous, as the CPU path needs, whatever the strides of the CUDA tensor.
      return tensor.to(tensor.options().device(at::kCPU), /*non_blocking=*/false, /*copy=*/false, at::MemoryFormat::Contiguous);
    case Mode::ContiguousCopies:
      return tensor.contiguous();
    case Mode::PassThrough:
      break;
  }
  return tensor;
}

at::Tensor CallStaging::reads(const at::Tensor& tensor) {
  return copyOf(tensor);
}

at::Tensor CallStaging::writes(const at::Tensor& tensor) {
  auto copy = copyOf(tensor);
  if (!copy.is_same(tensor)) {
    written_.push_back(tensor);
    copies_.push_back(copy);
  }
  return copy;
}

std::vector<at::Tensor> CallStaging::reads(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) {
    out.push_back(reads(t));
  }
  return out;
}

std::vector<at::Tensor> CallStaging::writes(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) {
    out.push_back(writes(t));
  }
  return out;
}

std::vector<std::vector<at::Tensor>> CallStaging::reads(const std::vector<std::vector<at::Tensor>>& lists) {
  std::vector<std::vector<at::Tensor>> out;
  for (const auto& list : lists) {
    out.push_back(reads(list));
  }
  return out;
}

std::vector<std::vector<at::Tensor>> CallStaging::writes(const std::vector<std::vector<at::Tensor>>& lists) {
  std::vector<std::vector<at::Tensor>> out;
  for (const auto& list : lists) {
    out.push_back(writes(list));
  }
  return out;
}

c10::intrusive_ptr<c10d::Work> CallStaging::finish(const c10::intrusive_ptr<c10d::Work>& inner) {
  if (written_.empty()) {
    return inner;
  }
  auto outer = c10::make_intrusive<FutureWork>(rank_, inner->retrieveOpType(), "staged copies", written_);
  // Runs on the thread that completes the call on the copies (qccl's worker or a p2p
  // listener).
  inner->getFuture()->addCallback([outer, written = written_, copies = copies_](c10::ivalue::Future& done) {
    if (done.hasError()) {
      outer->markFailed(done.exception_ptr());
      return;
    }
    try {
      for (size_t i = 0; i < written.size(); ++i) {
        c10::DeviceGuard guard(written[i].device());
        written[i].copy_(copies[i]);  // synchronous: the data is in place when it returns
      }
      outer->markSucceeded();
    } catch (...) {
      outer->markFailed(std::current_exception());
    }
  });
  return outer;
}

} // namespace qccl
