#include "qccl/transport/gloo_transport.h"

#include <ATen/core/ivalue.h>

#include "qccl/common/errors.h"

namespace qccl {

GlooTransport::GlooTransport(
    c10::intrusive_ptr<c10d::Backend> gloo,
    std::chrono::milliseconds timeout)
    : gloo_(std::move(gloo)), wakeUp_(std::make_shared<WakeUp>()), timeout_(timeout) {
  QCCL_CHECK_VALUE(gloo_, "the Gloo transport backend must not be None");
}

void GlooTransport::waitFor(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) {
  c10::intrusive_ptr<c10::ivalue::Future> future;
  try {
    future = work->getFuture();
  } catch (const c10::Error&) {
    waitWithoutFuture(work, what);  // some Gloo works (reduce_scatter) have no future
    return;
  }
  auto done = std::make_shared<bool>(false);
  future->addCallback([wakeUp = wakeUp_, done](c10::ivalue::Future&) {
    std::lock_guard<std::mutex> lock(wakeUp->mutex);
    *done = true;
    wakeUp->cv.notify_all();
  });

  const auto limit = timeout();
  {
    std::unique_lock<std::mutex> lock(wakeUp_->mutex);
    wakeUp_->cv.wait_for(lock, limit, [&] { return *done || wakeUp_->aborted; });
    if (!*done) {
      if (wakeUp_->aborted) {
        throwCommError(what + " on rank " + std::to_string(rank()) + " was aborted");
      }
      throwCommError(timedOutMessage(what, rank(), limit.count(), "a peer died, hangs, or did not call it"));
    }
  }
  if (future->hasError()) {
    throwCommError(failureMessage(what, rank(), future->exception_ptr()));
  }
}

void GlooTransport::waitWithoutFuture(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) {
  if (aborted()) {
    throwCommError(what + " on rank " + std::to_string(rank()) + " was aborted");
  }
  try {
    work->wait(timeout());
  } catch (const std::exception&) {
    throwCommError(failureMessage(what, rank(), std::current_exception()));
  }
}

std::chrono::milliseconds GlooTransport::timeout() const {
  std::lock_guard<std::mutex> lock(wakeUp_->mutex);
  return timeout_;
}

void GlooTransport::setTimeout(std::chrono::milliseconds timeout) {
  {
    std::lock_guard<std::mutex> lock(wakeUp_->mutex);
    timeout_ = timeout;
  }
  gloo_->setTimeout(timeout);
}

void GlooTransport::abort() {
  {
    std::lock_guard<std::mutex> lock(wakeUp_->mutex);
    wakeUp_->aborted = true;
    wakeUp_->cv.notify_all();
  }
  gloo_->abort();
}

bool GlooTransport::aborted() const {
  std::lock_guard<std::mutex> lock(wakeUp_->mutex);
  return wakeUp_->aborted;
}

} // namespace qccl
