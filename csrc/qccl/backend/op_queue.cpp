#include "qccl/backend/op_queue.h"

#include <algorithm>

#include "qccl/common/errors.h"

namespace qccl {
namespace {

bool shareStorage(const std::vector<at::Tensor>& some, const std::vector<at::Tensor>& others) {
  for (const auto& mine : some) {
    for (const auto& theirs : others) {
      if (mine.defined() && theirs.defined() && mine.is_alias_of(theirs)) {
        return true;
      }
    }
  }
  return false;
}

} // namespace

OpQueue::OpQueue(int rank, Admit admit, RunJointly runJointly, OnFailure onFailure)
    : rank_(rank), admit_(std::move(admit)), runJointly_(std::move(runJointly)) {
  inFlight_->onFailure = std::move(onFailure);
  worker_ = std::thread([this] { loop(); });
  watchdog_ = std::thread([this] { watch(); });
}

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
  inFlight_->cv.wait(lock, [this] { return inFlight_->entries.empty() && inFlight_->settling.empty(); });
}

void OpQueue::InFlight::tellFailure(const std::string& name, const std::exception_ptr& error) {
  std::lock_guard<std::mutex> lock(onFailureMutex);
  if (onFailure) {
    onFailure(name, error);
  }
}

void OpQueue::InFlight::failSettling(const Failing& failing) {
  for (const auto& [work, error] : failing) {
    tellFailure(work->name(), error);
    work->markFailed(error);
  }
  std::lock_guard<std::mutex> lock(mutex);
  settling.remove_if([&](const Entry& entry) {
    return std::any_of(failing.begin(), failing.end(), [&](const auto& f) { return f.first == entry.work; });
  });
  cv.notify_all();
}

void OpQueue::failRunning(const c10::intrusive_ptr<FutureWork>& work, const std::exception_ptr& error) {
  inFlight_->tellFailure(work->name(), error);
  work->markFailed(error);
}

void OpQueue::stop(const std::exception_ptr& reason) {
  fail(reason);
  {
    std::lock_guard<std::mutex> lock(callerRuns_->mutex);  // after an op a caller runs
    callerRuns_->queue = nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(inFlight_->onFailureMutex);
    inFlight_->onFailure = nullptr;
  }
  for (auto* thread : {&worker_, &watchdog_}) {
    if (thread->joinable() && thread->get_id() != std::this_thread::get_id()) {
      thread->join();
    }
  }
}

void OpQueue::fail(const std::exception_ptr& reason) {
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
}

void OpQueue::watch() {
  std::unique_lock<std::mutex> lock(inFlight_->mutex);
  while (!inFlight_->stopped) {
    auto now = std::chrono::steady_clock::now();
    auto next = now + std::chrono::hours(1);
    InFlight::Failing expired;
    for (auto it = inFlight_->entries.begin(); it != inFlight_->entries.end();) {
      if (it->deadline <= now) {
        expired.emplace_back(it->work, makeCommError(timedOutMessage(
            it->work->name(), rank_, it->timeout.count(), "a peer died, hangs, or did not call it")));
        auto done = it++;
        inFlight_->settling.splice(inFlight_->settling.end(), inFlight_->entries, done);
      } else {
        next = std::min(next, it->deadline);
        ++it;
      }
    }
    if (!expired.empty()) {
      lock.unlock();  // the failure callback may fail the whole queue, which takes the lock
      inFlight_->failSettling(expired);
      lock.lock();
      continue;
    }
    inFlight_->watchdogWakes = next;
    inFlight_->watchdogCv.wait_until(lock, next);
  }
}

bool OpQueue::runOnCaller(const FutureWork& work) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (stopped_ || running_ || !admitted_.empty() || ops_.size() != 1 || ops_.front().work.get() != &work) {
    return false;
  }
  running_ = true;
  runBatch(lock);
  running_ = false;
  cv_.notify_all();
  return true;
}

void OpQueue::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    // Not while a caller runs an op itself (runOnCaller).
    cv_.wait(lock, [this] { return !running_ && (stopped_ || !ops_.empty()); });
    if (ops_.empty()) {
      return;  // stopped and nothing left
    }
    running_ = true;
    runBatch(lock);
    running_ = false;
    cv_.notify_all();
  }
}

void OpQueue::runBatch(std::unique_lock<std::mutex>& lock) {
  std::vector<const QueuedOp*> batch;
  bool leading = true;
  for (size_t i = 0; i < ops_.size() && i < static_cast<size_t>(kMaxCallsPerCheck); ++i) {
    auto& op = ops_[i];  // deque elements stay put while only the runner pops
    // The leading small calls give their data to the check (QueuedOp::carried), but not
    // one whose tensors an earlier call of the batch touches: its data must be what that
    // call leaves there, which the check would read before that call ran.
    leading = leading && op.carried &&
        std::none_of(batch.begin(), batch.end(), [&](const QueuedOp* earlier) {
          return shareStorage(op.touches, earlier->touches);
        });
    op.ridesInCheck = leading;
    batch.push_back(&op);
  }
  lock.unlock();
  std::vector<std::exception_ptr> verdicts;
  std::exception_ptr batchFailed;
  try {
    // The data a carried call gives must be what earlier transfers left there.
    for (size_t i = 0; i < batch.size() && batch[i]->ridesInCheck; ++i) {
      awaitTransfersTouching(batch[i]->touches);
    }
    verdicts = admit_(batch);
  } catch (...) {
    batchFailed = std::current_exception();  // the whole batch fails
  }
  lock.lock();
  if (batchFailed) {
    // Out of the queue first: the failure callback may fail() the queue, and these
    // calls fail with their own error.
    std::vector<QueuedOp> failed;
    for (size_t i = 0; i < batch.size() && !ops_.empty(); ++i) {
      failed.push_back(std::move(ops_.front()));
      ops_.pop_front();
    }
    lock.unlock();
    if (!failed.empty()) {
      inFlight_->tellFailure(failed.front().name, batchFailed);
    }
    for (auto& op : failed) {
      op.work->markFailed(batchFailed);
    }
    failed.clear();  // release tensors before reporting idle
    lock.lock();
    return;
  }
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
    failRunning(op.work, std::current_exception());
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
    const auto error = std::current_exception();
    inFlight_->tellFailure(ops.front().name, error);
    for (auto& op : ops) {
      op.work->markFailed(error);
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
  auto shares = [&](const InFlight::Entry& entry) { return shareStorage(tensors, entry.touches); };
  // Bounded: the watchdog fails and removes a transfer at its deadline.
  std::unique_lock<std::mutex> lock(inFlight_->mutex);
  inFlight_->cv.wait(lock, [&] {
    return inFlight_->stopped ||
        (std::none_of(inFlight_->entries.begin(), inFlight_->entries.end(), shares) &&
         std::none_of(inFlight_->settling.begin(), inFlight_->settling.end(), shares));
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
        std::exception_ptr error;
        if (done.hasError()) {
          error = makeCommError(failureMessage(work->name(), rank, done.exception_ptr()));
        } else {
          try {
            then();  // while the entry still holds the tensors it writes
            work->markSucceeded();
          } catch (...) {
            error = std::current_exception();
          }
        }
        std::unique_lock<std::mutex> lock(inFlight->mutex);
        auto entry = std::find_if(
            inFlight->entries.begin(), inFlight->entries.end(), [&](const InFlight::Entry& e) { return e.work == work; });
        if (entry == inFlight->entries.end()) {
          return;  // failed already, by fail() or the watchdog
        }
        if (!error) {
          inFlight->entries.erase(entry);
          inFlight->cv.notify_all();
          return;
        }
        inFlight->settling.splice(inFlight->settling.end(), inFlight->entries, entry);
        lock.unlock();  // the failure callback may fail() the queue, which takes the lock
        inFlight->failSettling({{work, error}});
      });
}

bool QueuedWork::wait(std::chrono::milliseconds timeout) {
  if (timeout == kNoTimeout && !isCompleted()) {
    if (auto runs = queue_.lock()) {
      std::lock_guard<std::mutex> lock(runs->mutex);
      if (runs->queue) {
        runs->queue->runOnCaller(*this);
      }
    }
  }
  return FutureWork::wait(timeout);
}

} // namespace qccl
