// GlooTransport::abort() wakes a wait on a Gloo work that has no future (a pairwise
// receive of the compressed all-reduce) at once, instead of at the group timeout.

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "qccl/transport/gloo_factory.h"
#include "qccl/transport/gloo_transport.h"
#include "threads_as_ranks.h"

namespace {

TEST(GlooTransport, AbortWakesAReceiveThatNothingServes) {
  constexpr auto kTimeout = std::chrono::seconds(60);
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::promise<void> rankZeroDone;
  auto done = rankZeroDone.get_future().share();
  std::string error;
  std::chrono::duration<double> waited{};
  qccl::testing::runAsRanks(2, [&](int rank) {
    qccl::GlooTransport net(qccl::makeGlooBackend(store, rank, 2, kTimeout), kTimeout);
    if (rank == 1) {
      done.wait();  // stays connected, sends nothing
      return;
    }
    struct ReleaseRankOne {  // whatever happens below
      std::promise<void>& done;
      ~ReleaseRankOne() {
        done.set_value();
      }
    } release{rankZeroDone};
    auto bytes = at::zeros({16}, at::TensorOptions().dtype(at::kByte));
    auto receive = net.receiveBytes(bytes, 1, qccl::kAllToAllSlot);
    const auto start = std::chrono::steady_clock::now();
    auto waiter = std::async(std::launch::async, [&] {
      try {
        net.waitFor(receive, "the test's receive");
      } catch (const std::exception& e) {
        error = e.what();
      }
    });
    while (net.abortableWaits() == 0) {  // until the waiter is on its way into Gloo's wait
      std::this_thread::yield();
    }
    net.abort();
    waiter.get();
    waited = std::chrono::steady_clock::now() - start;
  });
  EXPECT_NE(error.find("aborted"), std::string::npos) << error;
  EXPECT_LT(waited.count(), 20.0) << "the wait ran on toward the group timeout";
}

} // namespace
