#pragma once

// One phase of an all-reduce (encode, transfer, decode), for as long as it is in scope:
// its time is added to a qccl.stats() counter, and torch.profiler shows it as a range
// "qccl:encode" / "qccl:transfer" / "qccl:decode" on the thread that runs it (the group's
// worker), so a profiled step shows where a compressed call spent its time.

#include <chrono>

#include <ATen/record_function.h>

namespace qccl::algo {

class Phase {
 public:
  // `title` is a string literal: the profiler may read it after this phase ends.
  Phase(const char* title, double& seconds) : seconds_(seconds) {
    if (range_.isActive()) {
      range_.before(title);
    }
  }
  ~Phase() {
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  Phase(const Phase&) = delete;
  Phase& operator=(const Phase&) = delete;

 private:
  double& seconds_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  at::RecordFunction range_{at::RecordScope::USER_SCOPE};  // ends when this phase does
};

} // namespace qccl::algo
