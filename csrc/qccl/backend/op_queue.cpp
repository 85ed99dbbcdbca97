#include "qccl/backend/op_queue.h"

#include <algorithm>

#include "qccl/common/errors.h"

namespace qccl {

OpQueue::OpQueue(int rank, Admit admit) : rank_(rank), admit_(std::move(admit)), worker_([this] { loop(); }) {}

OpQueue::~OpQueue() {
  stop(makeCommError("the process group was destroyed"));
}

void OpQueue::enqueue(QueuedOp op) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (stopped_) {
    lock.unlock();
    op.work->markFailed(stopped_);
    return;
  }
  ops_.push_back(std::move(op));
  cv_.notify_all();
}

void OpQueue::drain() {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return ops_.empty() && !running_; });
  }
  std::unique_lock<std::mutex> lock(inFlight_->mutex);
  inFlight_->cv.wait(lock, [this] { return inFlight_->works.empty(); });
}

void OpQueue::stop(const std::exception_ptr& reason) {
  std::deque<QueuedOp> abandoned;
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
  std::list<c10::intrusive_ptr<FutureWork>> onTheWire;
  {
    std::lock_guard<std::mutex> lock(inFlight_->mutex);
    onTheWire.swap(inFlight_->works);
    inFlight_->cv.notify_all();
  }
  for (auto& work : onTheWire) {
    work->markFailed(reason);  // their completion callbacks then find them settled
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
    std::vector<const QueuedOp*> batch;
    for (size_t i = 0; i < ops_.size() && i < static_cast<size_t>(kMaxCallsPerCheck); ++i) {
      batch.push_back(&ops_[i]);  // deque elements stay put while only the worker pops
    }
    running_ = true;
    lock.unlock();
    std::vector<std::exception_ptr> verdicts;
    std::exception_ptr checkFailed;
    try {
      verdicts = admit_(batch);
    } catch (...) {
      checkFailed = std::current_exception();
      verdicts.assign(batch.size(), checkFailed);
    }
    lock.lock();
    std::vector<QueuedOp> admitted;
    for (size_t i = 0; i < verdicts.size() && !ops_.empty(); ++i) {
      admitted.push_back(std::move(ops_.front()));
      ops_.pop_front();
    }
    lock.unlock();
    for (size_t i = 0; i < admitted.size(); ++i) {
      std::exception_ptr stopped;
      {
        std::lock_guard<std::mutex> guard(mutex_);
        stopped = stopped_;
      }
      run(admitted[i], stopped ? stopped : verdicts[i]);  // stop() fails what has not started
    }
    admitted.clear();  // release tensors before reporting idle
    lock.lock();
    running_ = false;
    cv_.notify_all();
  }
}

void OpQueue::run(QueuedOp& op, const std::exception_ptr& refused) {
  if (refused) {
    op.work->markFailed(refused);
    return;
  }
  try {
    auto started = op.body();
    if (started) {
      completeLater(op.work, std::move(*started));
    } else {
      op.work->markSucceeded();
    }
  } catch (...) {
    op.work->markFailed(std::current_exception());
  }
}

void OpQueue::completeLater(const c10::intrusive_ptr<FutureWork>& work, StartedTransfer started) {
  {
    std::lock_guard<std::mutex> lock(inFlight_->mutex);
    inFlight_->works.push_back(work);
  }
  // May run at once, on this thread, if the transfer is already done.
  started.work->getFuture()->addCallback(
      [inFlight = inFlight_, work, then = std::move(started.then), rank = rank_](c10::ivalue::Future& done) {
        if (done.hasError()) {
          work->markFailed(makeCommError(failureMessage(work->name(), rank, done.exception_ptr())));
        } else {
          try {
            then();
            work->markSucceeded();
          } catch (...) {
            work->markFailed(std::current_exception());
          }
        }
        std::lock_guard<std::mutex> lock(inFlight->mutex);
        inFlight->works.remove(work);
        inFlight->cv.notify_all();
      });
}

} // namespace qccl
