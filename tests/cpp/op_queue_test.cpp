#include <gtest/gtest.h>

#include <atomic>
#include <future>

#include "qccl/backend/op_queue.h"

namespace {

c10::intrusive_ptr<qccl::FutureWork> newWork(const std::string& name) {
  return c10::make_intrusive<qccl::FutureWork>(0, c10d::OpType::UNKNOWN, name, std::vector<at::Tensor>{}, 0);
}

TEST(OpQueue, RunsOpsInTheOrderTheyWereQueued) {
  qccl::OpQueue queue;
  std::vector<int> order;
  std::vector<c10::intrusive_ptr<qccl::FutureWork>> works;
  for (int i = 0; i < 50; ++i) {
    works.push_back(newWork("op"));
    queue.enqueue(works.back(), [&order, i] { order.push_back(i); });
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
  qccl::OpQueue queue;
  auto bad = newWork("bad");
  auto good = newWork("good");
  queue.enqueue(bad, [] { TORCH_CHECK(false, "qccl: boom"); });
  queue.enqueue(good, [] {});
  EXPECT_THROW(bad->wait(), c10::Error);
  EXPECT_TRUE(bad->getFuture()->hasError());
  EXPECT_TRUE(good->wait());
  EXPECT_FALSE(good->getFuture()->hasError());
}

TEST(OpQueue, StopFailsQueuedOpsAndRefusesNewOnes) {
  qccl::OpQueue queue;
  std::promise<void> release;
  auto gate = release.get_future().share();
  auto running = newWork("running");
  auto queued = newWork("queued");
  std::atomic<bool> started{false};
  queue.enqueue(running, [gate, &started] {
    started = true;
    gate.wait();
  });
  queue.enqueue(queued, [] { FAIL() << "must not run after stop"; });
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
  queue.enqueue(late, [] { FAIL() << "must not run after stop"; });
  EXPECT_THROW(late->wait(), std::runtime_error);
}

} // namespace
