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
  const auto limit = timeout == kNoTimeout ? groupTimeout_ : timeout;
  bool done = false;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    done = cv_.wait_for(lock, limit, [this] { return completed_; });
  }
  if (!done) {
    // Settles the work: a message that comes later is no longer matched to it.
    markFailed(makeCommError(
        name() + " on rank " + std::to_string(rank_) + " timed out after " +
        std::to_string(limit.count()) + " ms (the peer died, hangs, or did not post the matching call)"));
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

} // namespace qccl::p2p
