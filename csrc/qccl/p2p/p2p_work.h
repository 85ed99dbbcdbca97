#pragma once

// The Work of one send or receive. The p2p engine settles it: a send once its bytes are
// out of the caller's tensor, a receive when a message has been delivered into its
// tensor (or either when it reports a rejection). wait() without a timeout waits for the
// group timeout, never forever.

#include <atomic>
#include <chrono>
#include <functional>
#include <string>

#include "qccl/p2p/waiting_work.h"

namespace qccl::p2p {

class P2PWork : public FutureWork {
 public:
  P2PWork(
      int rank,
      c10d::OpType type,
      std::string name,
      at::Tensor tensor,
      std::chrono::milliseconds groupTimeout,
      int peer);

  // Raises after `timeout` (the group's by default) if still pending, and calls the
  // OnTimedOut given to it, if any.
  bool wait(std::chrono::milliseconds timeout = kNoTimeout) override;
  // Told, once, that a wait gave up on this work (with the timeout's message).
  using OnTimedOut = std::function<void(const std::string& why)>;
  void onTimedOut(OnTimedOut callback) {
    onTimedOut_ = std::move(callback);
  }
  // Given to a receive that its waiter may serve itself (from one peer, on one host):
  // wait() calls it first, to read the peer's messages on the waiting thread until this
  // work is settled or `deadline` passes, sparing the hand-off from the listener.
  using ReadWhileWaiting = std::function<void(P2PWork& work, std::chrono::steady_clock::time_point deadline)>;
  void readWhileWaiting(ReadWhileWaiting reader) {
    reader_ = std::move(reader);
  }
  // The peer; for a receive from any source, the sender once it has been matched.
  int sourceRank() const override;
  void setSourceRank(int rank);
  // A send whose payload Gloo writes from the caller's tensor: it is settled when
  // `transfer` completes, which wait() then waits on itself.
  void settleWith(c10::intrusive_ptr<WaitingWork> transfer);

 private:
  std::chrono::milliseconds groupTimeout_;
  std::atomic<int> peer_;
  c10::intrusive_ptr<WaitingWork> transfer_;
  OnTimedOut onTimedOut_;
  ReadWhileWaiting reader_;
};

} // namespace qccl::p2p
