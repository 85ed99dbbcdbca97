#pragma once

// Ranks as threads of the test process: runs body(rank) on `size` threads, joins them,
// and rethrows the first failure (a failing rank must fail the test, not terminate it).

#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qccl::testing {

inline void runAsRanks(int size, const std::function<void(int rank)>& body) {
  std::mutex mutex;
  std::exception_ptr failure;
  std::vector<std::thread> threads;
  for (int rank = 0; rank < size; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        body(rank);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!failure) {
          failure = std::current_exception();
        }
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  if (failure) {
    std::rethrow_exception(failure);
  }
}

} // namespace qccl::testing
