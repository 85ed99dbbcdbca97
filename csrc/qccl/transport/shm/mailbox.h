#pragma once

// Byte streams between the ranks of a group that share a host, one per ordered pair of
// ranks: what point-to-point messages travel through on one host (p2p/p2p_engine.h,
// issue 28). Unlike Channel's rounds, in which every rank takes part, each stream has one
// writer and one reader, who never wait for each other except for room and for bytes.
//
// Each rank owns one segment: per peer, a ring of `ringBytes` holding its stream to that
// peer, with its `written` counter, and its `read` counter of that peer's stream to it;
// plus, per peer, a small ring of fixed-size status records (Mailbox::kStatusBytes) it
// sends that peer, which never waits: a reader that must answer while it reads (a
// rejected message) can then never be blocked by the peer it answers, which may be
// blocked writing to it. Only the owner moves its counters; each side wakes the other
// through a futex word next to the counter it moved.
//
//   writer: write(peer, bytes)     reader (one thread per peer): awaitFrom(peer), then
//           postStatus(peer, rec)          takeStatus(peer, rec) or read(peer, bytes)
//
// Setup as Channel's (channel.h): construct, publish myName() through the store,
// attach(every rank's name), unlinkOwn(). Waits spin a few microseconds, then sleep on
// the futex in slices, checking that the peer lives (pidfd) and has not closed its
// mailbox: a dead peer fails the waits on it within about 20 ms. A reader still gets
// every byte a peer wrote before it went away. abort() fails every wait, now and later.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qccl/transport/shm/peer_process.h"
#include "qccl/transport/shm/segment.h"

namespace qccl::shm {

class Mailbox {
 public:
  static constexpr uint64_t kStatusBytes = 128;

  Mailbox(int rank, int size, uint64_t ringBytes);
  ~Mailbox();  // tells the peers this rank is gone, unmaps
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  const std::string& myName() const {
    return own_.name();
  }
  void attach(const std::vector<std::string>& names);
  void unlinkOwn(std::chrono::milliseconds timeout);

  // Appends `bytes` to this rank's stream to `peer`, waiting for room while the peer
  // reads (at most `timeout` without progress). One writer per peer at a time.
  void write(int peer, const void* data, uint64_t bytes, std::chrono::milliseconds timeout);
  // Sends `peer` a status record of kStatusBytes; never waits. Raises if the peer has
  // kStatusSlots records it has not read yet. One caller per peer at a time.
  void postStatus(int peer, const void* record);

  // Waits until `peer` sent a status record or stream bytes, or `stop` holds (checked
  // whenever the wait wakes: see wakeReceivers); false when it sent neither and never
  // will (it went away), or at `until`. Raises DistBackendError on abort().
  bool awaitFrom(
      int peer,
      std::chrono::steady_clock::time_point until = std::chrono::steady_clock::time_point::max(),
      const std::function<bool()>& stop = nullptr);
  // Wakes this rank's awaitFrom(peer) sleepers, so that they check their `stop` again.
  void wakeReceivers(int peer);
  // Whether `peer` sent a status record or stream bytes not taken yet (does not wait).
  bool ready(int peer) const;
  // Takes the oldest status record from `peer` into `record`, if there is one.
  bool takeStatus(int peer, void* record);
  // Takes the next `bytes` of `peer`'s stream, waiting for them (no time limit: a reader
  // waits for as long as the group lives). Raises when the peer went away first.
  void read(int peer, void* into, uint64_t bytes);

  void abort();
  uint64_t bytesWritten() const {
    return bytesWritten_.load(std::memory_order_relaxed);
  }

 private:
  struct Pair;  // the per-peer block of a segment (mailbox.cpp)
  Pair& mine(int peer) const;    // this rank's block for `peer`
  Pair& theirs(int peer) const;  // `peer`'s block for this rank
  uint8_t* ring(int owner, int peer) const;
  // Waits until `ready()` holds, sleeping on `seq` (with `waiters`) of `owner`'s segment.
  // Raises naming `what` on abort(); when `peer` is gone or at `deadline`, raises too,
  // or returns false if `mayGiveUp`.
  template <typename Ready>
  bool waitFor(Ready ready, uint32_t& seq, uint32_t& waiters, int peer, const char* what,
               std::chrono::steady_clock::time_point deadline, bool mayGiveUp);
  [[noreturn]] void fail(int peer, const std::string& what, const std::string& why) const;
  bool gone(int peer) const;

  const int rank_;
  const int size_;
  const uint64_t ringBytes_;
  Segment own_;
  std::vector<Segment> peers_;
  std::vector<uint8_t*> bases_;  // by rank: the start of each rank's segment
  std::vector<PeerProcess> processes_;
  std::atomic<bool> aborted_{false};
  std::atomic<uint64_t> bytesWritten_{0};
};

} // namespace qccl::shm
