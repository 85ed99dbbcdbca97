#pragma once

// The CPU transport: Gloo, reached through the ProcessGroupGloo that PyTorch ships.
// torch wheels ship ProcessGroupGloo.hpp but not Gloo's own headers, so qccl never
// constructs Gloo objects itself; the Python registration creates a ProcessGroupGloo on
// the group's store and hands it over as a plain c10d::Backend (see docs/design.md).
//
// This layer only moves bytes and waits: it knows nothing of codecs or reduce-op
// lowering. Every wait is bounded by the group timeout and wakes up on abort().

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/Backend.hpp>

#include "qccl/transport/transport.h"

namespace qccl {

class GlooTransport : public Transport {
 public:
  GlooTransport(c10::intrusive_ptr<c10d::Backend> gloo, std::chrono::milliseconds timeout);

  // The Gloo backend: collectives are issued on it, then handed to waitFor().
  c10d::Backend& gloo() {
    return *gloo_;
  }
  c10d::Backend& backend() override {
    return *gloo_;
  }

  int rank() const override {
    return gloo_->getRank();
  }
  int size() const override {
    return gloo_->getSize();
  }
  bool postsReceivesAhead() const override {
    return true;
  }

  // Blocks until `work` (a Gloo collective) has finished. Raises DistBackendError naming
  // `what` when it fails, when the group timeout passes first, or after abort().
  void waitFor(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) override;

  std::chrono::milliseconds timeout() const;
  void setTimeout(std::chrono::milliseconds timeout);

  // Wakes every current and future waitFor() with an error; irreversible.
  void abort();
  bool aborted() const;
  // Waits on works without a future that abort() would cut short now (for tests).
  size_t abortableWaits() const;

 private:
  // For Gloo works without a future (send, recv, reduce_scatter): a bounded wait, which
  // abort() cuts short where the work can be aborted (send and recv).
  void waitWithoutFuture(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what);

  struct WakeUp {
    std::mutex mutex;
    std::condition_variable cv;
    bool aborted = false;
    std::vector<c10::intrusive_ptr<c10d::Work>> waiting;  // in waitWithoutFuture()
  };

  c10::intrusive_ptr<c10d::Backend> gloo_;
  // Shared with the completion callbacks Gloo runs on its own threads, which may fire
  // after this transport is gone.
  std::shared_ptr<WakeUp> wakeUp_;
  std::chrono::milliseconds timeout_;
};

} // namespace qccl
