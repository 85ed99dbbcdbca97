#pragma once

// The group's worker thread: runs collectives one at a time, in the order the caller
// issued them. Every rank issues the same collectives in the same order, so every rank's
// worker calls Gloo in the same order, which is what keeps composite operations (several
// Gloo calls with local work in between) from interleaving differently across ranks.

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "qccl/backend/work.h"

namespace qccl {

class OpQueue {
 public:
  OpQueue();
  ~OpQueue();
  OpQueue(const OpQueue&) = delete;
  OpQueue& operator=(const OpQueue&) = delete;

  // Runs `body` on the worker, then completes `work` with its outputs or its exception.
  void enqueue(c10::intrusive_ptr<FutureWork> work, std::function<void()> body);

  // Blocks until everything enqueued so far has run.
  void drain();

  // Fails every op not yet started with `reason` and stops the worker once the running
  // op returns. Later enqueue() calls fail their work at once.
  void stop(const std::exception_ptr& reason);

 private:
  struct Op {
    c10::intrusive_ptr<FutureWork> work;
    std::function<void()> body;
  };

  void loop();

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Op> ops_;
  bool running_ = false;  // an op is executing right now
  std::exception_ptr stopped_;
  std::thread worker_;
};

} // namespace qccl
