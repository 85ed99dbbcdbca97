// How a Channel waits, and how its waits fail.

#include "qccl/common/errors.h"
#include "qccl/transport/shm/channel.h"
#include "qccl/transport/shm/futex.h"

namespace qccl::shm {
namespace {

using Clock = std::chrono::steady_clock;

// Spinning catches a peer that is a few microseconds behind at no system-call cost; past
// that, sleeping on the futex costs less than it saves. The spin is short on purpose:
// four ranks on two cores collapse when waiters burn the time slices their peers need
// (2 us of spin fell asleep too often between two cores, 20 us cost oversubscribed ranks
// twice the time per round).
// No sched_yield() phase between spin and sleep, measured on a 2-core VM: where only
// ranks share the cores, 50 us of yields made rounds about 1.5x faster than the futex's
// wake-ups; but where anything else runs there (another job, the rank's own compute
// threads) a yield hands it a whole slice: rounds of 3.8 ms at the 99th percentile and a
// mean 10x worse, where a futex sleeper is woken as soon as its peer publishes.
constexpr auto kSpin = std::chrono::microseconds(5);
// The longest sleep between checks for a dead or closed peer, an abort and the deadline.
// abort() and a closing peer wake sleepers at once; only a peer's death waits for a slice.
constexpr auto kSleepSlice = std::chrono::milliseconds(20);

std::string rankName(int peer) {
  return peer < 0 ? std::string("every rank") : "rank " + std::to_string(peer);
}

} // namespace

void Channel::waitAtLeast(int owner, uint64_t& counter, uint64_t target, const Waiting& waiting) {
  auto reached = [&] { return shared(counter).load(std::memory_order_acquire) >= target; };
  if (reached()) {
    return;
  }
  const auto start = Clock::now();
  for (uint32_t spins = 1;; ++spins) {
    cpuRelax();
    if (reached()) {
      return;
    }
    if (spins % 16 == 0 && Clock::now() - start >= kSpin) {
      break;
    }
  }
  const auto deadline = start + std::chrono::milliseconds(timeoutMs_.load());
  SegmentHeader& header = *headers_[owner];
  for (;;) {
    // Count ourselves in, then read seq: a change after this read either shows in
    // `reached` below or makes the futex refuse to sleep (futex.h, notifyChange).
    shared(header.waiters).fetch_add(1, std::memory_order_seq_cst);
    const uint32_t seq = shared(header.seq).load(std::memory_order_seq_cst);
    struct Uncount {
      uint32_t& waiters;
      ~Uncount() {
        shared(waiters).fetch_sub(1, std::memory_order_seq_cst);
      }
    } uncount{header.waiters};
    if (reached()) {
      return;
    }
    checkBetweenSleeps(waiting, deadline);
    futexWait(&header.seq, seq, std::min<Clock::duration>(kSleepSlice, deadline - Clock::now()));
    if (reached()) {
      return;
    }
  }
}

void Channel::checkBetweenSleeps(const Waiting& waiting, Clock::time_point deadline) {
  if (aborted_.load(std::memory_order_seq_cst)) {
    std::string why;
    {
      std::lock_guard<std::mutex> lock(abortMutex_);
      why = abortReason_;
    }
    fail(waiting, "aborted (" + why + ")");
  }
  int closedPeer = -1;
  for (int peer = 0; peer < size_ && closedPeer < 0; ++peer) {
    if (peer != rank_ && headers_[peer] != nullptr && shared(headers_[peer]->closed).load() != 0) {
      closedPeer = peer;
    }
  }
  // A system call per peer, so once a slice; and at once when a peer closed, which it
  // does when it saw a death: the error then names the rank that died, not the messenger
  // (which may have exited since, but closed its channel first: a death leaves it open).
  const auto now = Clock::now();
  if (closedPeer >= 0 || now - lastLivenessCheck_ >= kSleepSlice) {
    lastLivenessCheck_ = now;
    for (int peer = 0; peer < size_; ++peer) {
      if (peer != rank_ && shared(headers_[peer]->closed).load() == 0 && !processes_[peer].alive()) {
        fail(waiting, "rank " + std::to_string(peer) + " died (its process " + std::to_string(processes_[peer].pid()) +
                 " exited)");
      }
    }
  }
  if (closedPeer >= 0) {
    fail(waiting, "rank " + std::to_string(closedPeer) +
             " closed its shared-memory channel (it was aborted, failed or destroyed)");
  }
  if (now >= deadline) {
    fail(waiting, "");
  }
}

// Records the failure (every later call repeats it), tells the peers, and raises.
// An empty reason means the deadline passed.
void Channel::fail(const Waiting& waiting, const std::string& reason) {
  const std::string what = waiting.stage == std::string("round")
      ? "shared-memory round " + std::to_string(waiting.round)
      : std::string("shared-memory ") + waiting.stage;
  std::string why = "waiting for " + rankName(waiting.peer) + " to " + waiting.action;
  if (waiting.peer >= 0) {
    why += " round " + std::to_string(waiting.target);
  }
  failure_ = reason.empty() ? timedOutMessage(what, rank_, timeoutMs_.load(), why)
                            : what + " on rank " + std::to_string(rank_) + ": " + reason + " while " + why;
  closeAndWakeAll();
  throwCommError(failure_);
}

void Channel::checkUsable(const char* call, uint64_t round) const {
  if (!failure_.empty()) {
    throwCommError(
        "shared-memory channel of rank " + std::to_string(rank_) + ": " + call + "(" + std::to_string(round) +
        ") after an earlier failure: " + failure_);
  }
  if (aborted_.load()) {
    throwCommError(
        "shared-memory channel of rank " + std::to_string(rank_) + ": " + call + "(" + std::to_string(round) +
        ") after abort()");
  }
  QCCL_CHECK_VALUE(attached_.load(), "shared-memory channel of rank ", rank_, ": ", call, " before attach()");
}

} // namespace qccl::shm
