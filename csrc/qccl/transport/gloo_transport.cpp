#include "qccl/transport/gloo_transport.h"

#include <algorithm>

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
  const auto limit = timeout();
  {
    std::lock_guard<std::mutex> lock(wakeUp_->mutex);
    if (!wakeUp_->aborted) {
      wakeUp_->waiting.push_back(work);  // abort() aborts it
    }
  }
  std::exception_ptr failure;
  try {
    if (!aborted()) {
      work->wait(limit);
    }
  } catch (const std::exception&) {
    failure = std::current_exception();
  }
  {
    std::lock_guard<std::mutex> lock(wakeUp_->mutex);
    auto& waiting = wakeUp_->waiting;
    waiting.erase(std::remove(waiting.begin(), waiting.end(), work), waiting.end());
  }
  if (aborted()) {
    throwCommError(what + " on rank " + std::to_string(rank()) + " was aborted");
  }
  if (failure) {
    throwCommError(failureMessage(what, rank(), failure));
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
  std::vector<c10::intrusive_ptr<c10d::Work>> waiting;
  {
    std::lock_guard<std::mutex> lock(wakeUp_->mutex);
    wakeUp_->aborted = true;
    wakeUp_->cv.notify_all();
    waiting.swap(wakeUp_->waiting);
  }
  for (auto& work : waiting) {
    try {
      work->abort();  // wakes its wait (Gloo's send and recv works)
    } catch (const std::exception&) {
      // not abortable (reduce_scatter): it ends at the group timeout
    }
  }
  gloo_->abort();
}

size_t GlooTransport::abortableWaits() const {
  std::lock_guard<std::mutex> lock(wakeUp_->mutex);
  return wakeUp_->waiting.size();
}

bool GlooTransport::aborted() const {
  std::lock_guard<std::mutex> lock(wakeUp_->mutex);
  return wakeUp_->aborted;
}

} // namespace qccl
