#pragma once

// Bytes between the ranks of a group that share a host, in numbered rounds.
//
// Each rank owns one shared segment: a header (its pid, its `published` and `finished`
// round counters) and two slots of `slotBytes`; it maps every peer's. Every rank runs the
// same rounds 1, 2, 3, ... in the same order, each one:
//
//   uint8_t* out = channel.beginWrite(r);        // optional: only to send bytes
//   ... write up to slotBytes() bytes to out ...
//   channel.publish(r, bytesWritten);            // always (0 bytes: a barrier)
//   const uint8_t* in = channel.awaitPeer(p, r); // any peers, any order, self included
//   ... read in ...
//   channel.finish(r);                           // always: done reading round r
//
// Round r uses slot r % 2, so a rank may run one round ahead of a slow peer; beginWrite(r)
// waits until every peer has finished round r - 2 (the last reader of that slot). No
// global barrier per round.
//
// Setup, in two steps because names travel through the group's store:
//   Channel channel(rank, size, slotBytes, timeout);   // creates this rank's segment
//   store.set(key(rank), channel.myName());            // the integrator's part
//   channel.attach(every rank's name, in rank order);  // maps the peers' segments
//   channel.unlinkOwn();  // waits until every peer has mapped this rank's segment, then
//                         // removes its name: from here on nothing is left in /dev/shm
//                         // even if every rank is SIGKILLed
// Until unlinkOwn returns, a rank SIGKILLed leaves its segment's name behind (a graceful
// end or an exception still removes it). The constructor throws SegmentTooLarge when
// /dev/shm cannot hold the segment: the ranks must then agree, through the store, to
// fall back together.
//
// Waits spin a few microseconds, then sleep on a futex in the peer's header in slices,
// checking between slices that no peer died or closed its channel. Every wait ends within
// the timeout. Failures raise DistBackendError ("qccl: shared-memory round r on rank R:
// ..."), and are sticky: the channel refuses every later call (ranks are out of step
// after one), and it tells its peers, whose waits on it then fail at once instead of at
// their timeout.
//
// One thread uses a channel at a time; abort(), setTimeout() and bytesPublished() may be
// called from any thread.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "qccl/transport/shm/peer_process.h"
#include "qccl/transport/shm/segment.h"
#include "qccl/transport/shm/segment_header.h"

namespace qccl::shm {

class Channel {
 public:
  Channel(int rank, int size, uint64_t slotBytes, std::chrono::milliseconds timeout);
  ~Channel(); // tells the peers this rank is gone, unmaps, unlinks if not yet done
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  const std::string& myName() const {
    return own_.name();
  }
  void attach(const std::vector<std::string>& names);
  void unlinkOwn();

  uint8_t* beginWrite(uint64_t round);
  void publish(uint64_t round, uint64_t bytes);
  const uint8_t* awaitPeer(int peer, uint64_t round);
  void finish(uint64_t round);

  // Every wait, now or later, raises at once (from any thread), naming `why`: a rank
  // whose wait was cut short by another rank's failure says which.
  void abort(const std::string& why);
  void setTimeout(std::chrono::milliseconds timeout) {
    timeoutMs_.store(timeout.count());
  }

  int rank() const {
    return rank_;
  }
  int size() const {
    return size_;
  }
  uint64_t slotBytes() const {
    return slotBytes_;
  }
  uint64_t bytesPublished() const {
    return bytesPublished_.load(std::memory_order_relaxed);
  }
  // Nanoseconds awaitPeer() was blocked on `peer` since the channel was made (a peer that
  // had published already costs nothing): the cross-rank check's per-peer waits.
  int64_t blockedNanoseconds(int peer) const {
    return blockedNs_[peer];
  }

 private:
  // What a wait is for, worded only when it fails.
  struct Waiting {
    const char* stage; // "round" or "setup"
    uint64_t round; // the caller's current round
    int peer; // -1: every peer
    const char* action;
    uint64_t target; // the peer's round (or count) that ends the wait
  };

  uint8_t* slot(int owner, uint64_t round) const;
  void waitAtLeast(int owner, uint64_t& counter, uint64_t target, const Waiting& waiting);
  void checkBetweenSleeps(const Waiting& waiting, std::chrono::steady_clock::time_point deadline);
  [[noreturn]] void fail(const Waiting& waiting, const std::string& reason);
  void checkUsable(const char* call, uint64_t round) const;
  void closeAndWakeAll();

  const int rank_;
  const int size_;
  const uint64_t slotBytes_;
  std::atomic<int64_t> timeoutMs_;
  Segment own_;
  std::vector<Segment> peers_; // by rank; this rank's entry stays empty
  std::vector<SegmentHeader*> headers_; // by rank, this rank's included
  std::vector<PeerProcess> processes_; // by rank
  std::atomic<bool> attached_{false};
  std::atomic<bool> aborted_{false};
  std::mutex abortMutex_;
  std::string abortReason_; // the first abort()'s, under abortMutex_
  std::string failure_; // the first failure, repeated by every later call
  uint64_t published_ = 0; // this rank's counters, as it last stored them
  uint64_t finished_ = 0;
  std::atomic<uint64_t> bytesPublished_{0};
  std::vector<int64_t> blockedNs_; // by rank
  std::chrono::steady_clock::time_point lastLivenessCheck_{};
};

} // namespace qccl::shm
