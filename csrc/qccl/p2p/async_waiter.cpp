#include "qccl/p2p/async_waiter.h"

#include "qccl/p2p/waiting_work.h"

namespace qccl {

AsyncWaiter::~AsyncWaiter() {
  abortAll();
}

void AsyncWaiter::post(c10::intrusive_ptr<WaitingWork> work) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) {
    return;  // the group is going away; the work is waited on by its owner or aborted
  }
  pending_.push_back(std::move(work));
  if (!thread_.joinable()) {
    thread_ = std::thread([this] { loop(); });
  }
  cv_.notify_all();
}

void AsyncWaiter::abortAll() {
  std::deque<c10::intrusive_ptr<WaitingWork>> abandoned;
  c10::intrusive_ptr<WaitingWork> current;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    abandoned.swap(pending_);
    current = current_;
    cv_.notify_all();
  }
  if (current) {
    current->abort();
  }
  for (auto& work : abandoned) {
    work->abort();
  }
  if (thread_.joinable()) {
    thread_.join();
  }
}

void AsyncWaiter::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    cv_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
    if (stopping_) {
      return;
    }
    current_ = std::move(pending_.front());
    pending_.pop_front();
    auto work = current_;
    lock.unlock();
    work->waitQuietly();
    lock.lock();
    current_.reset();
  }
}

} // namespace qccl
