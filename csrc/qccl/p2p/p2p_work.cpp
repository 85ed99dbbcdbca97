#include "qccl/p2p/p2p_work.h"

#include "qccl/common/errors.h"

namespace qccl::p2p {

P2PWork::P2PWork(
    int rank,
    c10d::OpType type,
    std::string name,
    at::Tensor tensor,
    std::chrono::milliseconds groupTimeout,
    int peer)
    : FutureWork(rank, type, std::move(name), {std::move(tensor)}),
      groupTimeout_(groupTimeout),
      peer_(peer) {}

bool P2PWork::wait(std::chrono::milliseconds timeout) {
  if (transfer_ && timeout == kNoTimeout) {
    // Waits on Gloo here rather than for the background waiter, which takes the group's
    // transfers one at a time (and would add a thread hand-off). Only with the group
    // timeout: a Gloo wait that times out closes every connection of the group.
    transfer_->waitQuietly();  // settles this work through the callback of settleWith()
  }
  const auto limit = timeout == kNoTimeout ? groupTimeout_ : timeout;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  if (reader_ && !isCompleted()) {
    reader_(*this, deadline);
  }
  bool done = false;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    done = cv_.wait_until(lock, deadline, [this] { return completed_; });
  }
  if (!done) {
    // Settles the work: a message that comes later is no longer matched to it.
    const auto why = timedOutMessage(name(), rank_, limit.count(), "the peer died, hangs, or did not post the matching call");
    if (markFailed(makeCommError(why)) && onTimedOut_) {
      onTimedOut_(why);
    }
  }
  if (auto error = exception()) {
    std::rethrow_exception(error);
  }
  return true;
}

int P2PWork::sourceRank() const {
  return peer_.load();
}

void P2PWork::setSourceRank(int rank) {
  peer_.store(rank);
}

void P2PWork::settleWith(c10::intrusive_ptr<WaitingWork> transfer) {
  transfer_ = std::move(transfer);
  // Runs on whichever thread finishes waiting on Gloo (the engine's background waiter,
  // or wait() here), or at once if that has happened. Weak: a transfer that is never
  // waited on (the group was shut down) keeps nothing alive.
  c10::weak_intrusive_ptr<P2PWork> weak(c10::intrusive_ptr<P2PWork>::reclaim_copy(this));
  transfer_->future()->addCallback([weak](c10::ivalue::Future& done) {
    auto self = weak.lock();
    if (!self) {
      return;
    }
    if (!done.hasError()) {
      self->markSucceeded();
      return;
    }
    self->markFailed(makeCommError(
        self->name() + " on rank " + std::to_string(self->rank_) + " failed: rank " +
        std::to_string(self->sourceRank()) + " is unreachable (it died, or closed the process group): " +
        describeException(done.exception_ptr())));
  });
}

} // namespace qccl::p2p
