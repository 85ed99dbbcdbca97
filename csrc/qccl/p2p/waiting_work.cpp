#include "qccl/p2p/waiting_work.h"

#include "qccl/common/errors.h"

namespace qccl {

WaitingWork::WaitingWork(
    int rank,
    c10d::OpType type,
    std::string name,
    std::vector<c10::intrusive_ptr<c10d::Work>> parts,
    std::vector<at::Tensor> outputs,
    std::chrono::milliseconds timeout)
    : FutureWork(rank, type, std::move(name), std::move(outputs)),
      parts_(std::move(parts)),
      timeout_(timeout) {}

void WaitingWork::waitParts(std::chrono::milliseconds timeout) {
  // Gloo counts completions per buffer: each part must be waited on exactly once.
  std::lock_guard<std::mutex> once(waitMutex_);
  if (Work::isCompleted()) {
    if (auto error = exception()) {
      std::rethrow_exception(error);
    }
    return;
  }
  std::exception_ptr error;
  try {
    for (auto& part : parts_) {
      part->wait(timeout);
    }
  } catch (...) {
    error = makeCommError(failureMessage(name(), rank_, std::current_exception()));
  }
  if (error) {
    markFailed(error);
    std::rethrow_exception(error);
  }
  markSucceeded();
}

bool WaitingWork::wait(std::chrono::milliseconds timeout) {
  waitParts(timeout == kNoTimeout ? timeout_ : timeout);
  return true;
}

void WaitingWork::waitQuietly() {
  try {
    waitParts(timeout_);
  } catch (...) {
    // Recorded in the work by waitParts(); whoever waits on it sees the error.
  }
}

void WaitingWork::abort() {
  for (auto& part : parts_) {
    try {
      part->abort();
    } catch (...) {
      // Collective parts cannot be aborted one by one; the group abort stops them.
    }
  }
}

} // namespace qccl
