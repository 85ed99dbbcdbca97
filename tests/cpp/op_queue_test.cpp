#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <map>
#include <mutex>

#include "qccl/backend/op_queue.h"

namespace {

c10::intrusive_ptr<qccl::FutureWork> newWork(const std::string& name) {
  return c10::make_intrusive<qccl::FutureWork>(0, c10d::OpType::UNKNOWN, name, std::vector<at::Tensor>{}, 0);
}

constexpr std::chrono::milliseconds kNoDeadline = std::chrono::hours(1);

// Runs every op it is given (no other ranks to agree with).
std::vector<std::exception_ptr> admitAll(const std::vector<const qccl::QueuedOp*>& batch) {
  return std::vector<std::exception_ptr>(batch.size());
}

void enqueue(qccl::OpQueue& queue, const c10::intrusive_ptr<qccl::FutureWork>& work, std::function<void()> body) {
  queue.enqueue({work, work->name(), {}, {}, [body = std::move(body)] {
                   body();
                   return std::optional<qccl::StartedTransfer>{};
                 }});
}

// A transfer the test completes by hand.
class ManualTransfer : public c10d::Work {
 public:
  ManualTransfer() : future_(c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()))) {}
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override {
    return future_;
  }
  void complete() {
    future_->markCompleted(c10::IValue(std::vector<at::Tensor>{}));
  }
  void fail() {
    future_->setError(std::make_exception_ptr(std::runtime_error("the wire broke")));
  }

 private:
  c10::intrusive_ptr<c10::ivalue::Future> future_;
};

TEST(OpQueue, RunsOpsInTheOrderTheyWereQueued) {
  qccl::OpQueue queue(0, admitAll);
  std::vector<int> order;
  std::vector<c10::intrusive_ptr<qccl::FutureWork>> works;
  for (int i = 0; i < 50; ++i) {
    works.push_back(newWork("op"));
    enqueue(queue, works.back(), [&order, i] { order.push_back(i); });
  }
  works.back()->wait();
  queue.drain();
  ASSERT_EQ(order.size(), 50u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(order[i], i);
  }
  for (auto& w : works) {
    EXPECT_TRUE(w->isCompleted());
    EXPECT_TRUE(w->isSuccess());
  }
}

TEST(OpQueue, AFailingOpFailsOnlyItsWorkAndItsFuture) {
  qccl::OpQueue queue(0, admitAll);
  auto bad = newWork("bad");
  auto good = newWork("good");
  enqueue(queue, bad, [] { TORCH_CHECK(false, "qccl: boom"); });
  enqueue(queue, good, [] {});
  EXPECT_THROW(bad->wait(), c10::Error);
  EXPECT_TRUE(bad->getFuture()->hasError());
  EXPECT_TRUE(good->wait());
  EXPECT_FALSE(good->getFuture()->hasError());
}

TEST(OpQueue, StopFailsQueuedOpsAndRefusesNewOnes) {
  qccl::OpQueue queue(0, admitAll);
  std::promise<void> release;
  auto gate = release.get_future().share();
  auto running = newWork("running");
  auto queued = newWork("queued");
  std::atomic<bool> started{false};
  enqueue(queue, running, [gate, &started] {
    started = true;
    gate.wait();
  });
  enqueue(queue, queued, [] { FAIL() << "must not run after stop"; });
  while (!started) {
    std::this_thread::yield();
  }
  auto reason = std::make_exception_ptr(std::runtime_error("qccl: stopped for the test"));
  std::thread stopper([&] { queue.stop(reason); });
  EXPECT_THROW(queued->wait(), std::runtime_error);  // failed before the running op ends
  release.set_value();
  stopper.join();
  EXPECT_TRUE(running->isSuccess());

  auto late = newWork("late");
  enqueue(queue, late, [] { FAIL() << "must not run after stop"; });
  EXPECT_THROW(late->wait(), std::runtime_error);
}

TEST(OpQueue, StartedTransfersOverlapAndCompleteInAnyOrder) {
  qccl::OpQueue queue(0, admitAll);
  auto first = c10::make_intrusive<ManualTransfer>();
  auto second = c10::make_intrusive<ManualTransfer>();
  std::vector<std::string> finished;
  std::mutex finishedMutex;
  auto start = [&](const c10::intrusive_ptr<ManualTransfer>& transfer, std::string name) {
    auto work = newWork(name);
    queue.enqueue({work, name, {}, {}, [&, transfer, name] {
                     return std::optional<qccl::StartedTransfer>(qccl::StartedTransfer{transfer, [&, name] {
                       std::lock_guard<std::mutex> lock(finishedMutex);
                       finished.push_back(name);
                     }, kNoDeadline});
                   }});
    return work;
  };
  auto a = start(first, "a");
  auto b = start(second, "b");
  auto after = newWork("after");
  enqueue(queue, after, [] {});
  after->wait();  // the worker went on while both transfers are still on the wire
  EXPECT_FALSE(a->isCompleted());
  EXPECT_FALSE(b->isCompleted());
  second->complete();
  b->wait();
  EXPECT_FALSE(a->isCompleted());
  first->fail();
  EXPECT_THROW(a->wait(), c10::DistBackendError);
  queue.drain();
  EXPECT_EQ(finished, std::vector<std::string>{"b"});  // a failed transfer is not finished
}

// Async calls on one tensor see each other's results, as on a CUDA stream (Gloo's own
// process group runs them at once, and a tensor reduced twice comes out wrong there).
TEST(OpQueue, AnOpWaitsForTransfersOnTheWireThatShareItsTensors) {
  qccl::OpQueue queue(0, admitAll);
  auto shared = at::zeros({8});
  // A transfer that never completes: the watchdog ends it after 100 ms, long after the
  // worker could have started the next op.
  auto stuck = c10::make_intrusive<ManualTransfer>();
  auto writer = newWork("writes shared");
  queue.enqueue({writer, "writes shared", {}, {shared}, [stuck] {
                   return std::optional<qccl::StartedTransfer>(
                       qccl::StartedTransfer{stuck, [] {}, std::chrono::milliseconds(100)});
                 }});
  bool writerEndedFirst = false;
  auto reader = newWork("reads a view of shared");
  queue.enqueue({reader, "reads a view of shared", {}, {shared.narrow(0, 4, 2)}, [&] {
                   writerEndedFirst = writer->isCompleted();
                   return std::optional<qccl::StartedTransfer>{};
                 }});
  reader->wait();
  EXPECT_TRUE(writerEndedFirst);
  EXPECT_THROW(writer->wait(), c10::DistBackendError);

  // Ops on other tensors do not wait.
  auto elsewhere = at::zeros({8});
  auto open = c10::make_intrusive<ManualTransfer>();
  auto onTheWire = newWork("writes shared again");
  queue.enqueue({onTheWire, "writes shared again", {}, {shared}, [open] {
                   return std::optional<qccl::StartedTransfer>(qccl::StartedTransfer{open, [] {}, kNoDeadline});
                 }});
  auto other = newWork("touches another tensor");
  queue.enqueue({other, "touches another tensor", {}, {elsewhere}, [] { return std::optional<qccl::StartedTransfer>{}; }});
  other->wait();
  EXPECT_FALSE(onTheWire->isCompleted());
  open->complete();
  queue.drain();
}

TEST(OpQueue, StopFailsTransfersOnTheWire) {
  qccl::OpQueue queue(0, admitAll);
  auto transfer = c10::make_intrusive<ManualTransfer>();
  auto work = newWork("on the wire");
  queue.enqueue({work, "on the wire", {}, {}, [transfer] {
                   return std::optional<qccl::StartedTransfer>(qccl::StartedTransfer{transfer, [] {}, kNoDeadline});
                 }});
  auto after = newWork("after");
  enqueue(queue, after, [] {});
  after->wait();
  EXPECT_FALSE(work->isCompleted());
  queue.stop(std::make_exception_ptr(std::runtime_error("qccl: stopped for the test")));
  EXPECT_THROW(work->wait(), std::runtime_error);
  transfer->complete();  // a late completion finds the work settled
  EXPECT_FALSE(work->isSuccess());
  queue.drain();  // nothing left in flight
}

TEST(OpQueue, ATransferThatNeverEndsFailsAtItsTimeout) {
  qccl::OpQueue queue(0, admitAll);
  auto transfer = c10::make_intrusive<ManualTransfer>();  // never completed
  auto work = newWork("stuck");
  queue.enqueue({work, "stuck", {}, {}, [transfer] {
                   return std::optional<qccl::StartedTransfer>(
                       qccl::StartedTransfer{transfer, [] {}, std::chrono::milliseconds(50)});
                 }});
  try {
    work->wait();
    ADD_FAILURE() << "a transfer that never ends must fail";
  } catch (const c10::DistBackendError& e) {
    EXPECT_NE(std::string(e.what()).find("stuck on rank 0: Timed out after 50 ms"), std::string::npos) << e.what();
  }
  queue.drain();  // nothing left on the wire
}

TEST(OpQueue, RunsOnlyTheOpsTheCheckAdmits) {
  std::vector<size_t> batchSizes;
  // Admits one op per check and refuses op "refused".
  qccl::OpQueue queue(0, [&](const std::vector<const qccl::QueuedOp*>& batch) {
    batchSizes.push_back(batch.size());
    std::vector<std::exception_ptr> verdicts(1);
    if (batch[0]->name == "refused") {
      verdicts[0] = std::make_exception_ptr(std::invalid_argument("qccl: refused by the check"));
    }
    return verdicts;
  });
  std::vector<std::string> ran;
  std::vector<c10::intrusive_ptr<qccl::FutureWork>> works;
  for (const char* name : {"one", "refused", "three"}) {
    works.push_back(newWork(name));
    enqueue(queue, works.back(), [&ran, name] { ran.push_back(name); });
  }
  queue.drain();
  EXPECT_EQ(ran, (std::vector<std::string>{"one", "three"}));
  EXPECT_THROW(works[1]->wait(), std::invalid_argument);
  EXPECT_EQ(batchSizes.size(), 3u);
}

} // namespace

// A call that joins its predecessor unless it starts a run.
class TestJoinable : public qccl::Joinable {
 public:
  explicit TestJoinable(bool startsRun) : startsRun_(startsRun) {}
  bool joins(const qccl::Joinable& previous) const override {
    return !startsRun_ && dynamic_cast<const TestJoinable*>(&previous) != nullptr;
  }

 private:
  bool startsRun_;
};

TEST(OpQueue, ConsecutiveJoinableOpsOfABatchRunTogether) {
  std::promise<void> allQueued;
  auto queuedFuture = allQueued.get_future().share();
  std::atomic<int> batches{0};
  // The first batch (the gate) waits until everything is queued, so the second holds
  // every other op; "f" is refused there.
  auto admit = [&](const std::vector<const qccl::QueuedOp*>& batch) {
    std::vector<std::exception_ptr> verdicts(batch.size());
    if (batches++ == 0) {
      queuedFuture.wait();
      return std::vector<std::exception_ptr>(1);
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i]->name == "f") {
        verdicts[i] = std::make_exception_ptr(std::invalid_argument("refused"));
      }
    }
    return verdicts;
  };
  std::mutex runsMutex;
  std::vector<std::vector<std::string>> runs;
  auto runJointly = [&](const std::vector<qccl::QueuedOp*>& ops) {
    std::vector<std::string> names;
    for (const auto* op : ops) {
      names.push_back(op->name);
    }
    std::lock_guard<std::mutex> lock(runsMutex);
    runs.push_back(names);
  };
  qccl::OpQueue queue(0, admit, runJointly);

  std::vector<c10::intrusive_ptr<qccl::FutureWork>> works;
  auto add = [&](const std::string& name, std::shared_ptr<qccl::Joinable> joinable) {
    works.push_back(newWork(name));
    queue.enqueue({works.back(), name, {}, {}, [&, name] {
                     std::lock_guard<std::mutex> lock(runsMutex);
                     runs.push_back({name});
                     return std::optional<qccl::StartedTransfer>{};
                   }, nullptr, std::move(joinable)});
  };
  auto joins = std::make_shared<TestJoinable>(false);
  add("gate", nullptr);
  for (const auto* name : {"a", "b", "c"}) {
    add(name, joins);
  }
  add("d", nullptr);  // not joinable: ends the run before it
  add("e", joins);
  add("f", joins);    // refused: ends the run before it, fails alone
  add("g", joins);
  add("h", joins);
  add("i", std::make_shared<TestJoinable>(true));  // starts a run of its own
  add("k", joins);
  allQueued.set_value();
  queue.drain();

  using Runs = std::vector<std::vector<std::string>>;
  EXPECT_EQ(runs, (Runs{{"gate"}, {"a", "b", "c"}, {"d"}, {"e"}, {"g", "h"}, {"i", "k"}}));
  for (const auto& work : works) {
    if (work->name() == "f") {
      EXPECT_THROW(work->wait(), std::invalid_argument);
    } else {
      EXPECT_TRUE(work->wait());
    }
  }
}

TEST(OpQueue, AFailedJointRunFailsEveryOpInIt) {
  auto runJointly = [](const std::vector<qccl::QueuedOp*>&) { throw std::runtime_error("the run broke"); };
  std::promise<void> allQueued;
  auto queuedFuture = allQueued.get_future().share();
  std::atomic<int> batches{0};
  auto admit = [&](const std::vector<const qccl::QueuedOp*>& batch) {
    if (batches++ == 0) {  // the gate: the next batch holds both ops
      queuedFuture.wait();
      return std::vector<std::exception_ptr>(1);
    }
    return std::vector<std::exception_ptr>(batch.size());
  };
  qccl::OpQueue queue(0, admit, runJointly);
  auto joins = std::make_shared<TestJoinable>(false);
  auto gate = newWork("gate");
  enqueue(queue, gate, [] {});
  std::vector<c10::intrusive_ptr<qccl::FutureWork>> works;
  for (const auto* name : {"a", "b"}) {
    works.push_back(newWork(name));
    queue.enqueue({works.back(), name, {}, {}, [] { return std::optional<qccl::StartedTransfer>{}; }, nullptr, joins});
  }
  allQueued.set_value();
  for (const auto& work : works) {
    EXPECT_THROW(work->wait(), std::runtime_error);
  }
}

namespace {

// What the failure callback heard: the op's name, and whether its work had completed.
struct Heard {
  std::mutex mutex;
  std::vector<std::pair<std::string, bool>> calls;
};

} // namespace

TEST(OpQueue, TheFailureCallbackHearsOfAFailedOpBeforeItsWorkFails) {
  auto heard = std::make_shared<Heard>();
  std::map<std::string, c10::intrusive_ptr<qccl::FutureWork>> works;
  auto refuseSecond = [](const std::vector<const qccl::QueuedOp*>& batch) {
    std::vector<std::exception_ptr> verdicts;
    for (const auto* op : batch) {
      verdicts.push_back(op->name == "refused" ? std::make_exception_ptr(std::runtime_error("refused")) : nullptr);
    }
    return verdicts;
  };
  qccl::OpQueue queue(0, refuseSecond, nullptr, [&heard, &works](const std::string& name, const std::exception_ptr&) {
    std::lock_guard<std::mutex> lock(heard->mutex);
    heard->calls.emplace_back(name, works.at(name)->isCompleted());
  });
  for (const char* name : {"body throws", "refused", "transfer fails", "transfer times out"}) {
    works[name] = newWork(name);
  }
  enqueue(queue, works["body throws"], [] { throw std::runtime_error("the peer died"); });
  enqueue(queue, works["refused"], [] {});
  auto broken = c10::make_intrusive<ManualTransfer>();
  queue.enqueue({works["transfer fails"], "transfer fails", {}, {}, [broken] {
                   return std::optional<qccl::StartedTransfer>(qccl::StartedTransfer{broken, [] {}, kNoDeadline});
                 }});
  auto stuck = c10::make_intrusive<ManualTransfer>();
  queue.enqueue({works["transfer times out"], "transfer times out", {}, {}, [stuck] {
                   return std::optional<qccl::StartedTransfer>(
                       qccl::StartedTransfer{stuck, [] {}, std::chrono::milliseconds(50)});
                 }});
  broken->fail();
  for (const char* name : {"body throws", "refused", "transfer fails", "transfer times out"}) {
    EXPECT_ANY_THROW(works[name]->wait()) << name;
  }
  queue.drain();
  std::lock_guard<std::mutex> lock(heard->mutex);
  std::map<std::string, bool> completedWhenHeard(heard->calls.begin(), heard->calls.end());
  EXPECT_EQ(heard->calls.size(), 3u);  // not the refused one: its arguments, not a failure
  for (const char* name : {"body throws", "transfer fails", "transfer times out"}) {
    ASSERT_EQ(completedWhenHeard.count(name), 1u) << name;
    EXPECT_FALSE(completedWhenHeard[name]) << name << ": its work failed before the callback heard of it";
  }
}

namespace {

TEST(OpQueue, AWaiterRunsTheOnlyQueuedOpItselfWhileTheWorkerIsIdle) {
  qccl::OpQueue queue(0, admitAll);
  std::vector<int> order;
  std::vector<bool> onTheWaiter;
  for (int i = 0; i < 300; ++i) {
    c10::intrusive_ptr<qccl::FutureWork> work =
        c10::make_intrusive<qccl::QueuedWork>(queue, 0, c10d::OpType::UNKNOWN, "op", std::vector<at::Tensor>{}, 0);
    const auto waiter = std::this_thread::get_id();
    enqueue(queue, work, [&, i, waiter] {
      order.push_back(i);
      onTheWaiter.push_back(std::this_thread::get_id() == waiter);
    });
    work->wait();  // QueuedWork::wait: runs it here unless the worker took it first
    ASSERT_TRUE(work->isSuccess());
  }
  ASSERT_EQ(order.size(), 300u);
  for (int i = 0; i < 300; ++i) {
    EXPECT_EQ(order[i], i);
  }
  // The worker wakes up far later than the waiter asks: most ops run on the waiter.
  EXPECT_GT(std::count(onTheWaiter.begin(), onTheWaiter.end(), true), 150);
}

TEST(OpQueue, AWaiterLeavesOpsToTheWorkerWhileItRunsOthers) {
  qccl::OpQueue queue(0, admitAll);
  std::promise<void> release;
  auto released = release.get_future().share();
  std::promise<void> started;
  auto first = newWork("first");
  enqueue(queue, first, [&] {
    started.set_value();
    released.wait();
  });
  started.get_future().wait();  // the worker runs `first` now
  auto second = newWork("second");
  std::thread::id ranOn;
  enqueue(queue, second, [&] { ranOn = std::this_thread::get_id(); });
  EXPECT_FALSE(queue.runOnCaller(*second));  // it would overtake nothing, but the worker is busy
  release.set_value();
  second->wait();
  EXPECT_NE(ranOn, std::this_thread::get_id());
}

} // namespace
