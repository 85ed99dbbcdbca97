#pragma once

// A transfer an algorithm started on a transport without waiting for it, so that the
// group's worker can start the next call while this one is on the wire (calls of a
// group overlap). `work` has a future; once it completes without error, `then` turns
// what arrived into the caller's outputs, on whichever thread saw the completion. It
// fails if it has not completed within `timeout` (the group's, as for a wait).

#include <chrono>
#include <functional>

#include <torch/csrc/distributed/c10d/Work.hpp>

namespace qccl {

struct StartedTransfer {
  c10::intrusive_ptr<c10d::Work> work;
  std::function<void()> then;
  std::chrono::milliseconds timeout;

  // The same transfer, with `next` to run after `then`.
  StartedTransfer andThen(std::function<void()> next) && {
    then = [first = std::move(then), next = std::move(next)] {
      first();
      next();
    };
    return std::move(*this);
  }
};

} // namespace qccl
