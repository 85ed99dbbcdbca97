#include "qccl/backend/op_queue.h"

#include "qccl/common/errors.h"

namespace qccl {

OpQueue::OpQueue() : worker_([this] { loop(); }) {}

OpQueue::~OpQueue() {
  stop(makeCommError("the process group was destroyed"));
}

void OpQueue::enqueue(c10::intrusive_ptr<FutureWork> work, std::function<void()> body) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (stopped_) {
    lock.unlock();
    work->markFailed(stopped_);
    return;
  }
  ops_.push_back(Op{std::move(work), std::move(body)});
  cv_.notify_all();
}

void OpQueue::drain() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [this] { return ops_.empty() && !running_; });
}

void OpQueue::stop(const std::exception_ptr& reason) {
  std::deque<Op> abandoned;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!stopped_) {
      stopped_ = reason;
    }
    abandoned.swap(ops_);
    cv_.notify_all();
  }
  for (auto& op : abandoned) {
    op.work->markFailed(reason);
  }
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) {
    worker_.join();
  }
}

void OpQueue::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    cv_.wait(lock, [this] { return stopped_ || !ops_.empty(); });
    if (ops_.empty()) {
      return;  // stopped and nothing left
    }
    Op op = std::move(ops_.front());
    ops_.pop_front();
    running_ = true;
    lock.unlock();
    try {
      op.body();
      op.work->markSucceeded();
    } catch (...) {
      op.work->markFailed(std::current_exception());
    }
    op = Op{};  // release tensors before reporting idle
    lock.lock();
    running_ = false;
    cv_.notify_all();
  }
}

} // namespace qccl
