#pragma once

// WaitingWork: completes when the Gloo works it holds complete. Gloo's send/recv works
// have no future and must be waited on exactly once: an AsyncWaiter (async_waiter.h)
// waits on them in the background, for the Gloo sends under each message.

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "qccl/work/work.h"

namespace qccl {

class WaitingWork : public FutureWork {
 public:
  WaitingWork(
      int rank,
      c10d::OpType type,
      std::string name,
      std::vector<c10::intrusive_ptr<c10d::Work>> parts,
      std::vector<at::Tensor> outputs,
      std::chrono::milliseconds timeout);

  bool wait(std::chrono::milliseconds timeout = kNoTimeout) override;
  // Waits with the group timeout; a failure stays recorded in the work instead of throwing.
  void waitQuietly();
  // Aborts the underlying Gloo works, which wakes whoever waits on them.
  void abort() override;

 private:
  void waitParts(std::chrono::milliseconds timeout);

  std::vector<c10::intrusive_ptr<c10d::Work>> parts_;
  std::chrono::milliseconds timeout_;
  std::mutex waitMutex_;
};

} // namespace qccl
