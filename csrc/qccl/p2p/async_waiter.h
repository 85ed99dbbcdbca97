#pragma once

// A background thread that waits, in order, on works Gloo gives no future for (the Gloo
// sends under qccl's point-to-point messages), so that they are waited on exactly once
// and kept alive until done, without the caller blocking.

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include <c10/util/intrusive_ptr.h>

namespace qccl {

class WaitingWork;

class AsyncWaiter {
 public:
  AsyncWaiter() = default;
  ~AsyncWaiter();
  AsyncWaiter(const AsyncWaiter&) = delete;
  AsyncWaiter& operator=(const AsyncWaiter&) = delete;

  // Waits on `work` in the background (the thread starts on first use).
  void post(c10::intrusive_ptr<WaitingWork> work);

  // Aborts the work being waited on and every pending one, and stops the thread, so that
  // shutting a group down never waits for a receive that will not come.
  void abortAll();

 private:
  void loop();

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<c10::intrusive_ptr<WaitingWork>> pending_;
  c10::intrusive_ptr<WaitingWork> current_;
  bool stopping_ = false;
  std::thread thread_;
};

} // namespace qccl
