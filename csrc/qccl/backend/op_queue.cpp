#include "qccl/backend/op_queue.h"

#include <algorithm>

#include "qccl/common/errors.h"

namespace qccl {

OpQueue::OpQueue(int rank, Admit admit, RunJointly runJointly)
    : rank_(rank), admit_(std::move(admit)), runJointly_(std::move(runJointly)), worker_([this] { loop(); }), watchdog_([this] { watch(); }) {}

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
  inFlight_->cv.wait(lock, [this] { return inFlight_->entries.empty(); });
}

void OpQueue::stop(const std::exception_ptr& reason) {
  std::deque<QueuedOp> abandoned;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!stopped_) {
      stopped_ = reason;
    }
    abandoned.swap(ops_);
    for (auto& admitted : admitted_) {
      abandoned.push_back(std::move(admitted.op));
    }
    admitted_.clear();
    cv_.notify_all();
  }
  for (auto& op : abandoned) {
    op.work->markFailed(reason);
  }
  std::list<InFlight::Entry> onTheWire;
  {
    std::lock_guard<std::mutex> lock(inFlight_->mutex);
    onTheWire.swap(inFlight_->entries);
    inFlight_->stopped = reason;
    inFlight_->cv.notify_all();
    inFlight_->watchdogCv.notify_all();
  }
  for (auto& entry : onTheWire) {
    entry.work->markFailed(reason);  // their completion callbacks then find them settled
  }
  for (auto* thread : {&worker_, &watchdog_}) {
    if (thread->joinable() && thread->get_id() != std::this_thread::get_id()) {
      thread->join();
    }
  }
}

void OpQueue::watch() {
  std::unique_lock<std::mutex> lock(inFlight_->mutex);
  while (!inFlight_->stopped) {
    auto now = std::chrono::steady_clock::now();
    auto next = now + std::chrono::hours(1);
    for (auto it = inFlight_->entries.begin(); it != inFlight_->entries.end();) {
      if (it->deadline <= now) {
        it->work->markFailed(makeCommError(timedOutMessage(
            it->work->name(), rank_, it->timeout.count(), "a peer died, hangs, or did not call it")));
        it = inFlight_->entries.erase(it);
        inFlight_->cv.notify_all();
      } else {
        next = std::min(next, it->deadline);
        ++it;
      }
    }
    inFlight_->watchdogWakes = next;
    inFlight_->watchdogCv.wait_until(lock, next);
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
    try {
      // The leading small all_reduces give their data to the check (QueuedOp::local):
      // it must be what earlier transfers left there.
      for (size_t i = 0; i < batch.size() && batch[i]->local; ++i) {
        awaitTransfersTouching(batch[i]->touches);
      }
      verdicts = admit_(batch);
    } catch (...) {
      verdicts.assign(batch.size(), std::current_exception());  // the whole batch fails
    }
    lock.lock();
    for (size_t i = 0; i < verdicts.size() && !ops_.empty(); ++i) {
      admitted_.push_back({std::move(ops_.front()), verdicts[i]});
      ops_.pop_front();
    }
    while (!admitted_.empty()) {  // stop() takes the ones not started yet
      Admitted next = std::move(admitted_.front());
      admitted_.pop_front();
      std::vector<QueuedOp> together;
      while (runJointly_ && !next.refused && next.op.joinable && !admitted_.empty() && !admitted_.front().refused &&
             admitted_.front().op.joinable && admitted_.front().op.joinable->joins(*next.op.joinable)) {
        together.push_back(std::move(next.op));
        next = std::move(admitted_.front());
        admitted_.pop_front();
      }
      lock.unlock();
      if (together.empty()) {
        run(next.op, next.refused);
      } else {
        together.push_back(std::move(next.op));
        runJointly(together);
      }
      next = Admitted{};  // release tensors before reporting idle
      together.clear();
      lock.lock();
    }
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
    std::optional<at::ThreadLocalStateGuard> asTheCaller;
    if (op.callersState) {
      asTheCaller.emplace(*op.callersState);
    }
    awaitTransfersTouching(op.touches);
    auto started = op.body();
    if (started) {
      completeLater(op.work, std::move(*started), std::move(op.touches));
    } else {
      op.work->markSucceeded();
    }
  } catch (...) {
    op.work->markFailed(std::current_exception());
  }
}

void OpQueue::runJointly(std::vector<QueuedOp>& ops) {
  std::vector<QueuedOp*> pointers;
  for (auto& op : ops) {
    pointers.push_back(&op);
  }
  try {
    std::optional<at::ThreadLocalStateGuard> asTheCaller;
    if (ops.front().callersState) {
      asTheCaller.emplace(*ops.front().callersState);
    }
    for (auto& op : ops) {
      awaitTransfersTouching(op.touches);
    }
    runJointly_(pointers);
  } catch (...) {
    for (auto& op : ops) {
      op.work->markFailed(std::current_exception());
    }
    return;
  }
  for (auto& op : ops) {
    op.work->markSucceeded();
  }
}

void OpQueue::awaitTransfersTouching(const std::vector<at::Tensor>& tensors) {
  if (tensors.empty()) {
    return;
  }
  auto shares = [&](const InFlight::Entry& entry) {
    for (const auto& mine : tensors) {
      for (const auto& theirs : entry.touches) {
        if (mine.defined() && theirs.defined() && mine.is_alias_of(theirs)) {
          return true;
        }
      }
    }
    return false;
  };
  // Bounded: the watchdog fails and removes a transfer at its deadline.
  std::unique_lock<std::mutex> lock(inFlight_->mutex);
  inFlight_->cv.wait(lock, [&] {
    return inFlight_->stopped || std::none_of(inFlight_->entries.begin(), inFlight_->entries.end(), shares);
  });
}

void OpQueue::completeLater(
    const c10::intrusive_ptr<FutureWork>& work,
    StartedTransfer started,
    std::vector<at::Tensor> touches) {
  {
    std::lock_guard<std::mutex> lock(inFlight_->mutex);
    if (inFlight_->stopped) {
      // stop() ran while the worker was starting this transfer, and has already failed
      // what was on the wire: nobody else would fail this one.
      work->markFailed(inFlight_->stopped);
      return;
    }
    inFlight_->entries.push_back(
        {work, std::chrono::steady_clock::now() + started.timeout, started.timeout, std::move(touches)});
    if (inFlight_->entries.back().deadline < inFlight_->watchdogWakes) {
      inFlight_->watchdogWakes = inFlight_->entries.back().deadline;
      inFlight_->watchdogCv.notify_all();  // it must wake sooner than it planned
    }
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
        inFlight->entries.remove_if([&](const InFlight::Entry& entry) { return entry.work == work; });
        inFlight->cv.notify_all();
      });
}

} // namespace qccl
